"""Subscriptions: which connection gets which symbol at which throttle, and every
ordering rule of subscribing and unsubscribing.

- ticks of a subscribe wait behind its ack, its snapshot and its recovered ticks (the
  connection is held);
- the snapshot and recovery race: route and join first, read the snapshot or history
  second, and let the outbox drop any seq that is not above the last one sent;
- a throttle change moves a route without a duplicate or an early delivery;
- after `unsubscribe` queues its ack, no tick of those symbols is sent;
- bars (`bars` on subscribe) follow the subscription: its throttle, its end; joined like
  ticks (route, join the symbol's bars, then read its open bars for the snapshot).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from marketstream.core.barfan import BarFan
from marketstream.core.bars import Bar
from marketstream.core.connection import Connection
from marketstream.core.fanout import Fanout
from marketstream.core.losses import Losses
from marketstream.core.membership import BarGroups, Membership
from marketstream.core.recovery import HistoryReads, check
from marketstream.core.requests import Request
from marketstream.core.store import History, Store
from marketstream.core.throttle import Throttle
from marketstream.core.tick import EncodedTick
from marketstream.core.transport import TickTransport

log = logging.getLogger(__name__)

STORE_TIMEOUT = 5.0  # seconds a request waits for the store or the transport (catalog, join, snapshots)
FRAME_TICKS = 2000  # ticks per frame of recovered ticks (frames stay well below 1 MiB)


class Subscriptions:
    """Routes connections to symbols (unthrottled in `fanout`, throttled in `throttle`)
    and joins and leaves the symbols on the transport (`membership`)."""

    def __init__(
        self,
        store: Store,
        transport: TickTransport,
        fanout: Fanout,
        throttle: Throttle,
        history: HistoryReads,
        losses: Losses,
        clock: Callable[[], float],
        left: Callable[[str], None],
        told: Callable[[str, str], str],
        barfan: BarFan | None = None,
    ) -> None:
        self.store = store
        self.told = told  # (symbol, the epoch an ack gave) -> the epoch of the live ticks (`Inbound.told`)
        self.fanout = fanout
        self.throttle = throttle
        self.history = history
        self.losses = losses
        self.clock = clock
        self.membership = Membership(transport, self.routed, left)
        self.barfan = barfan if barfan is not None else BarFan(fanout, clock)
        self.bar_membership = Membership(BarGroups(transport), self.barfan.routed)
        self.available: Callable[[str], bool] | None = None  # whether a symbol's shard serves

    async def subscribe(self, conn: Connection, request: Request) -> None:
        """Subscribe `conn` to the request's symbols that are in the catalog, that it is
        entitled to, within its limits, at the request's effective throttle (replacing an
        earlier one).

        Queues the ack (with each symbol's epoch, and `recovered` for `since`), then for
        the new symbols their recovered ticks, or with `snapshot` (or a refused
        recovery) one snapshot frame; live ticks follow, each seq above the one before.
        """
        rejected = dict(request.rejected)
        wanted = request.symbols
        available = self.available
        if available is not None:
            down = [s for s in wanted if s not in conn.subscriptions and not available(s)]
            if down:
                rejected.update((s, "unavailable") for s in down)
                unavailable = set(down)
                wanted = [s for s in wanted if s not in unavailable]
        known = await asyncio.wait_for(self.store.known(wanted), STORE_TIMEOUT)
        room = conn.limits.max_subscriptions - len(conn.subscriptions)
        accepted: list[str] = []
        allows = conn.entitlement.allows
        for symbol, ok in zip(wanted, known, strict=True):
            if not ok:
                rejected[symbol] = "unknown_symbol"
            elif not allows(symbol):
                rejected[symbol] = "forbidden"
            elif symbol in conn.subscriptions:
                accepted.append(symbol)
            elif room > 0:
                accepted.append(symbol)
                room -= 1
            else:
                rejected[symbol] = "limit_exceeded"
        throttle = conn.limits.throttle(request.throttle_ms)
        fresh = [s for s in accepted if s not in conn.subscriptions]
        before = {s: conn.subscriptions[s] for s in accepted if s in conn.subscriptions}
        bars_before = {s: conn.bars[s] for s in before if s in conn.bars}
        since = {s: request.since[s] for s in fresh if s in request.since}  # ignored for the others
        with conn.holding():  # ticks wait behind the ack, the snapshot and the recovered ticks
            try:
                await asyncio.wait_for(self.membership.join(self._route(conn, accepted, throttle)), STORE_TIMEOUT)
                new_bars = self._route_bars(conn, accepted, request.bars, throttle)
                if conn.bars:
                    with_bars = [s for s in accepted if s in conn.bars]
                    await asyncio.wait_for(self.bar_membership.join(with_bars), STORE_TIMEOUT)
            except BaseException:
                # as before the request: the new symbols are not received by this process,
                # so drop them and what arrived for them meanwhile; the others get their
                # throttle and bars back
                conn.outbox.discard(self.remove(conn, fresh))
                for symbol, old in before.items():
                    self._route(conn, [symbol], old)
                    self.barfan.route(conn, symbol, bars_before.get(symbol, ()), old)
                raise
            # read after the join: what these return meets the live ticks held meanwhile
            recovered = await self._recoverable(conn, since)
            snapshots = await self._snapshots([s for s in accepted if s not in recovered])
            epochs = {s: t.epoch for s, t in snapshots.items()}
            epochs.update((s, h.epoch) for s, (h, _) in recovered.items() if h.epoch)
            ack: dict[str, object] = {
                "type": "ack",
                "id": request.id,
                "op": "subscribe",
                "symbols": accepted,
                "throttle_ms": throttle,
                "rejected": rejected,
                "epochs": epochs,
            }
            if since:
                ack["recovered"] = {s: s in recovered for s in since}
            if request.bars is not None:
                ack["bars"] = list(request.bars)
                conn.outbox.discard_bars(accepted, request.bars)  # of the intervals no longer wanted
            bar_snapshot = await self._open_bars(new_bars) if request.snapshot else []
            conn.reply(ack)
            for symbol, (_, ticks) in recovered.items():
                self._queue_recovered(conn, symbol, since[symbol][0], ticks, throttle)
            wanted_snapshots = [s for s in fresh if s not in recovered and (request.snapshot or s in since)]
            self._queue_snapshot(conn, [snapshots[s] for s in wanted_snapshots if s in snapshots], throttle)
            if bar_snapshot:
                self.barfan.snapshot(conn, bar_snapshot)
                if throttle:
                    for symbol in {b.symbol for b in bar_snapshot}:
                        self.barfan.delivered(conn, symbol, self.clock())
            self._align_epochs(conn, epochs)

    def _align_epochs(self, conn: Connection, epochs: dict[str, str]) -> None:
        """The ack gave each symbol the epoch the store had when it was read: Inbound
        learns it (a symbol without a live tick yet takes it, so that its first tick of
        another epoch resets every subscriber). When live ticks of another epoch reached
        the hub first (the store lost the seq just before the read returned), `conn` is
        reset to theirs now, after its snapshot, so that it never takes them for the old
        epoch's. The few of them merged into the snapshot are not sent again."""
        for symbol, epoch in epochs.items():
            if epoch:
                live = self.told(symbol, epoch)
                if live != epoch:
                    log.warning("hub: %s has epoch %s, not %s as read: resetting a subscriber", symbol, live, epoch)
                    conn.reset(symbol, live)

    def _route_bars(
        self, conn: Connection, symbols: list[str], wanted: tuple[str, ...] | None, throttle: int
    ) -> dict[str, tuple[str, ...]]:
        """Route the bars of `symbols` to `conn` at `throttle`: `wanted` intervals, or with
        None those it had. Returns the intervals each symbol gained (for the bars snapshot)."""
        gained: dict[str, tuple[str, ...]] = {}
        if wanted is None and not conn.bars:  # the common case: no bars at all
            return gained
        for symbol in symbols:
            old = conn.bars.get(symbol, ())
            intervals = old if wanted is None else wanted
            if intervals or old:
                self.barfan.route(conn, symbol, intervals, throttle)
            new = tuple(i for i in intervals if i not in old)
            if new:
                gained[symbol] = new
            if old and not intervals and not self.barfan.routed(symbol):
                self.bar_membership.leave_soon(symbol)
        return gained

    async def _open_bars(self, wanted: dict[str, tuple[str, ...]]) -> list[Bar]:
        """The open bars of the intervals in `wanted`, read after the bars were joined; none
        if the store fails (the live bars follow)."""
        if not wanted:
            return []
        try:
            found = await asyncio.wait_for(self.store.open_bars(list(wanted)), STORE_TIMEOUT)
        except Exception:
            log.exception("bar read failed; subscribing without the open bars")
            return []
        return [b for s, bars in found.items() for b in bars if b.interval in wanted[s]]

    def unsubscribe(self, conn: Connection, request: Request) -> None:
        """Unsubscribe `conn` from the request's symbols and queue the ack. After this
        returns, no tick of these symbols is sent to `conn`."""
        conn.outbox.discard(self.remove(conn, request.symbols))
        ack = {"type": "ack", "id": request.id, "op": "unsubscribe", "symbols": request.symbols}
        conn.reply({**ack, "rejected": request.rejected})

    async def _recoverable(
        self, conn: Connection, since: dict[str, tuple[int, str | None]]
    ) -> dict[str, tuple[History, list[EncodedTick]]]:
        """For each symbol of `since` that can be recovered, its history and the ticks the
        client missed (PROTOCOL.md, "Recovery"). A store failure refuses them all."""
        if not since:
            return {}
        try:
            tails = await asyncio.gather(*(self.history.tail(s, seq) for s, (seq, _) in since.items()))
        except Exception:
            log.exception("history read failed; answering recovered: false")
            tails = []
        found: dict[str, tuple[History, list[EncodedTick]]] = {}
        stats = self.history.stats
        for (symbol, (seq, epoch)), history in zip(since.items(), tails, strict=False):
            ticks, refusal = check(history, seq, epoch, conn.limits.max_recovery)
            if ticks is not None:
                found[symbol] = (history, ticks)
            elif refusal is not None:
                stats.refused_by[refusal] += 1
        if not tails:
            stats.refused_by["unavailable"] += len(since)
        stats.served += len(found)
        stats.refused += len(since) - len(found)
        return found

    async def _snapshots(self, symbols: list[str]) -> dict[str, EncodedTick]:
        """The stored snapshots of `symbols` that have one; none if the store fails (the
        live ticks follow, with their seq)."""
        if not symbols:
            return {}
        try:
            return await asyncio.wait_for(self.store.snapshots(symbols), STORE_TIMEOUT)
        except Exception:
            log.exception("snapshot read failed; subscribing without a snapshot")
            return {}

    def _queue_snapshot(self, conn: Connection, stored: list[EncodedTick], throttle: int) -> None:
        ticks = conn.outbox.accept_snapshot(stored)
        if not ticks:
            return
        if throttle:  # the snapshot counts as the symbol's last delivery
            now = self.clock()
            for tick in ticks:
                self.throttle.delivered(conn, tick.symbol, throttle, now)
        conn.outbox.add_control(conn.codec.ticks(ticks, "snapshot"))

    def _queue_recovered(
        self, conn: Connection, symbol: str, since: int, ticks: list[EncodedTick], throttle: int
    ) -> None:
        """Queue what `conn` missed of `symbol` after `since`, with the live ticks that came
        meanwhile, as `ticks` frames; under a throttle only the newest, with `conflated`."""
        merged = conn.outbox.accept_recovery(symbol, since, ticks)
        self.history.stats.ticks += len(ticks)
        if not merged:
            return
        if throttle:  # the newest, standing in for every tick after `since` (less those lost)
            last = merged[-1].seq
            merged = [merged[-1].with_conflated(last - since - 1 - self.losses.between(symbol, since, last))]
            self.throttle.delivered(conn, symbol, throttle, self.clock())
        for start in range(0, len(merged), FRAME_TICKS):
            conn.outbox.add_control(conn.codec.ticks(merged[start : start + FRAME_TICKS]))

    def routed(self, symbol: str) -> bool:
        """Whether a local connection is routed to `symbol`."""
        return symbol in self.fanout.routes or symbol in self.throttle.buckets

    def _route(self, conn: Connection, symbols: Iterable[str], throttle: int) -> list[str]:
        """Route `symbols` to `conn` at `throttle` (replacing an earlier throttle).

        A throttled route starts waiting: its first delivery comes at the first end of
        the interval at least `throttle` ms after the symbol's last delivery (see
        `sent_at`; a route that leaves throttle 0 counts as delivered now).
        Returns the symbols that this process does not receive yet.
        """
        new: list[str] = []
        joined = self.membership.joined
        for symbol in symbols:
            old = conn.subscriptions.get(symbol)
            if old == throttle:
                continue
            if old is not None:
                self._unroute(conn, symbol, old)
            conn.subscriptions[symbol] = throttle
            if throttle == 0:
                conn.sent_at.pop(symbol, None)
                self.fanout.route(conn, symbol)
            else:
                if old == 0:
                    conn.sent_at[symbol] = self.clock()
                self.throttle.route(conn, symbol, throttle)
            if symbol not in joined:
                new.append(symbol)
        return new

    def _unroute(self, conn: Connection, symbol: str, throttle: int) -> None:
        if throttle == 0:
            self.fanout.unroute(conn, symbol)
        else:
            self.throttle.unroute(conn, symbol, throttle)

    def remove(self, conn: Connection, symbols: Iterable[str]) -> list[str]:
        """Stop routing `symbols` to `conn`; leave the symbols no one here wants any more.
        Returns the symbols it was subscribed to. After this returns, the hub puts no
        tick of these symbols into `conn`'s outbox."""
        removed = []
        for symbol in symbols:
            throttle = conn.subscriptions.pop(symbol, None)
            if throttle is None:
                continue
            self._unroute(conn, symbol, throttle)
            conn.sent_at.pop(symbol, None)
            conn.outbox.last_seq.pop(symbol, None)  # no reset reaches it now: start afresh
            removed.append(symbol)
            if not self.routed(symbol):
                self.membership.leave_soon(symbol)
            if symbol in conn.bars:
                self.barfan.unroute(conn, symbol)
                if not self.barfan.routed(symbol):
                    self.bar_membership.leave_soon(symbol)
        return removed
