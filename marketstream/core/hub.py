"""The hub: one per process, the process-local fan-out of ticks to connections.

The hub receives every tick of the symbols its connections want from the tick
transport, once per process; `Inbound` checks it against its symbol's epoch and seq
(filling gaps from history, resetting subscribers on a new epoch), and the hub hands it
to its local subscribers: unthrottled ones through `Fanout`, throttled ones through
`Throttle`'s buckets. Bar updates (only of symbols with a local bar subscriber) go to
`BarFan`. `Subscriptions` routes connections to symbols, joins and leaves them on the
transport (`Membership`), and owns every ordering rule of subscribing.

The edge (the consumer) only parses frames, calls `connect`/`handle`/`detach`, and
replies to what the hub raises.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from marketstream.core.barfan import BarFan
from marketstream.core.closes import Close
from marketstream.core.codec import Codec
from marketstream.core.connection import Closer, Connection, Send, Write
from marketstream.core.entitlements import Entitlement
from marketstream.core.fanout import Fanout
from marketstream.core.inbound import Inbound
from marketstream.core.limits import Limits
from marketstream.core.losses import Losses
from marketstream.core.recovery import HistoryReads
from marketstream.core.requests import Request
from marketstream.core.stats import Stats
from marketstream.core.store import Store
from marketstream.core.subscriptions import Subscriptions
from marketstream.core.throttle import Throttle
from marketstream.core.tick import EncodedTick, now_ns
from marketstream.core.transport import MalformedMessage, TickTransport

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
RETRY_DELAY = 1.0  # seconds between receive attempts while the transport fails


class Hub:
    """Process-local fan-out. Create with `Hub(...)`, then `await hub.start()`."""

    def __init__(
        self,
        store: Store,
        transport: TickTransport,
        limits: Limits | None = None,
        slow_client_timeout: float = 5.0,
        flush_delay: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        available: Callable[[str], bool] | None = None,
    ) -> None:
        """`available(symbol)` says whether the symbol's shard serves (None: always):
        asked once per symbol of a subscribe, never per tick."""
        self.store = store
        self.transport = transport
        self.limits = limits or Limits()
        self.clock = clock  # monotonic seconds; throttle intervals and slow-client timing
        self.stats = Stats()
        self.losses = Losses()
        self.fanout = Fanout(clock, flush_delay, slow_client_timeout, self.stats)
        self.throttle = Throttle(self.fanout, clock)
        self.barfan = BarFan(self.fanout, clock)
        self.inbound = Inbound(store, self._deliver, self._reset, self.losses, self.stats)
        self.history = HistoryReads(store, self.limits.max_recovery)
        self.subscriptions = Subscriptions(
            store,
            transport,
            self.fanout,
            self.throttle,
            self.history,
            self.losses,
            clock,
            self._left,
            self.inbound.told,
            self.barfan,
        )
        self.subscriptions.available = available
        self.membership = self.subscriptions.membership
        self.connections: set[Connection] = set()
        self._restrict_after_request: set[Connection] = set()
        self._receiver: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Open the transport and start receiving. Idempotent; raises (and may be called
        again) when the transport cannot be opened."""
        async with self._starting:
            if self._receiver is None:
                await self.transport.open()
                self._receiver = asyncio.get_running_loop().create_task(self._receive_loop(), name="hub-receiver")

    async def stop(self) -> None:
        """Cancel the hub's tasks (shutdown)."""
        if self._receiver is not None:
            self._receiver.cancel()
            self._receiver = None
        self.throttle.stop()
        self.barfan.stop()
        self.fanout.stop()
        self.membership.stop()
        self.subscriptions.bar_membership.stop()
        self.inbound.stop()
        self.history.stop()

    @property
    def started(self) -> bool:
        return self._receiver is not None

    @property
    def alive(self) -> bool:
        """True while the receiver runs."""
        return self._receiver is not None and not self._receiver.done()

    async def _receive_loop(self) -> None:
        receive = self.transport.receive
        stats = self.stats
        clock = self.clock
        on_tick = self.on_tick
        on_bars = self.barfan.offer
        while True:
            try:
                tick = await receive()
            except asyncio.CancelledError:
                raise
            except MalformedMessage:  # one bad message must not stop the others
                stats.bad_messages += 1
                if stats.bad_messages <= 10 or stats.bad_messages % 1000 == 0:
                    log.exception("hub: dropped a malformed transport message (%d so far)", stats.bad_messages)
                continue
            except Exception:
                stats.transport_errors += 1
                log.exception("hub: cannot receive from the tick transport; retrying in %g s", RETRY_DELAY)
                await asyncio.sleep(RETRY_DELAY)
                continue
            stats.last_message = clock()
            try:
                if isinstance(tick, EncodedTick):
                    on_tick(tick)
                else:
                    on_bars(tick)
            except Exception:
                log.exception("hub: delivering %r failed", tick)

    def on_tick(self, tick: EncodedTick) -> None:
        """Take one tick from the transport: checked by `Inbound`, then delivered."""
        self.stats.ticks_received += 1
        self.inbound.on_tick(tick)

    def _deliver(self, tick: EncodedTick) -> None:
        """Hand one tick to every local subscriber of its symbol."""
        self.fanout.deliver(tick)
        self.throttle.offer(tick)
        if self.history.recent:  # a recovery is going on: keep the tick for the next ones
            self.history.saw(tick)

    def _left(self, symbol: str) -> None:
        self.inbound.forget(symbol)
        self.history.forget(symbol)

    def _reset(self, symbol: str, epoch: str) -> None:
        self.history.forget(symbol)
        self.throttle.reset(symbol)
        for conn in self.fanout.routes.get(symbol, set()) | self.throttle.subscribers(symbol):
            conn.reset(symbol, epoch)

    # -- connections ----------------------------------------------------------------

    def connect(
        self,
        codec: Codec,
        send: Send,
        closer: Closer,
        writable: Callable[[], bool] | None = None,
        session: str = "",
        limits: Limits | None = None,
        entitlement: Entitlement | None = None,
        write: Write | None = None,
    ) -> Connection:
        """A new connection of this hub, with its `welcome` queued and being sent.

        `send` writes one frame; `closer(code, reason)` closes the WebSocket (called
        once, from `Connection.close`); `writable()` says whether a send would not wait;
        `write(frame)`, where the server offers it, writes an already-framed frame at
        once (the flush then frames and writes without `send`).
        `limits` and `entitlement` are the connection's own (a key's); by default the
        hub's limits and every symbol.
        """
        limits = limits or self.limits
        conn = Connection(
            codec, send, limits, session, closer, writable, self.clock, self.stats, self.losses, entitlement, write
        )
        self.connections.add(conn)
        conn.reply(
            {
                "type": "welcome",
                "protocol": PROTOCOL_VERSION,
                "session": session,
                "encoding": codec.name,
                "server_time": now_ns(),
                "limits": limits.announced(),
            }
        )
        return conn

    def detach(self, conn: Connection) -> None:
        """Forget a connection whose peer is gone, keeping its counts in the hub's totals.
        After this returns, nothing more is sent to it."""
        conn.close(Close.GOING_AWAY, "disconnected")
        self._restrict_after_request.discard(conn)
        self.subscriptions.remove(conn, list(conn.subscriptions))
        if conn in self.connections:
            self.connections.discard(conn)
            stats = self.stats
            stats.ticks_sent_closed += conn.ticks_sent
            stats.frames_closed += conn.frames
            stats.bytes_closed += conn.bytes_sent
            stats.conflated_closed += conn.outbox.conflated

    def restrict(self, conn: Connection, entitlement: Entitlement) -> list[str]:
        """Give `conn` a new entitlement (its key's grant changed) and end its
        subscriptions of symbols the new one does not allow, with an `unsubscribed`
        message (reason `forbidden`). After this returns, no tick of those symbols is
        sent to `conn`. Returns the symbols ended.

        While a subscribe of `conn` is being handled, the new entitlement applies at once
        to what is not yet checked, and the ending waits until its ack is queued, so that
        the client never sees `unsubscribed` before the ack that subscribed.
        """
        conn.entitlement = entitlement
        if conn.held:
            self._restrict_after_request.add(conn)
            return []
        lost = [s for s in conn.subscriptions if not entitlement.allows(s)]
        if lost and not conn.closed:
            conn.outbox.discard(self.subscriptions.remove(conn, lost))
            conn.reply({"type": "unsubscribed", "symbols": lost, "reason": "forbidden"})
        return lost

    def end_unavailable(self, gone: Callable[[str], bool]) -> list[str]:
        """End every subscription of a symbol for which `gone(symbol)` (its shard has been
        down too long), with an `unsubscribed` message (reason `unavailable`). After this
        returns, no tick of those symbols is sent to those connections. A connection in
        the middle of a subscribe is left for the next call. Returns the symbols ended."""
        ended: set[str] = set()
        for conn in list(self.connections):
            if conn.closed or conn.held:
                continue
            lost = [s for s in conn.subscriptions if gone(s)]
            if lost:
                conn.outbox.discard(self.subscriptions.remove(conn, lost))
                conn.reply({"type": "unsubscribed", "symbols": lost, "reason": "unavailable"})
                ended.update(lost)
        if ended:
            log.warning("hub: ended the subscriptions of %d symbols whose shard is down", len(ended))
        return sorted(ended)

    # -- requests -------------------------------------------------------------------

    async def handle(self, conn: Connection, request: Request) -> None:
        """Carry out a checked request and queue its replies.

        Raises when the store or the transport fails; the connection is then as it
        was before the request, and the caller replies `internal_error`.
        """
        if request.op == "ping":
            conn.reply({"type": "pong", "id": request.id, "server_time": now_ns()})
        elif request.op == "list":
            bars = conn.bars
            subs = [
                {"symbol": s, "throttle_ms": t, "bars": list(bars.get(s, ()))}
                for s, t in sorted(conn.subscriptions.items())
            ]
            conn.reply({"type": "subscriptions", "id": request.id, "subscriptions": subs})
        elif request.op == "subscribe":
            try:
                await self.subscriptions.subscribe(conn, request)
            finally:
                if conn in self._restrict_after_request:
                    self._restrict_after_request.discard(conn)
                    self.restrict(conn, conn.entitlement)
        else:
            self.subscriptions.unsubscribe(conn, request)

    def routed(self, symbol: str) -> bool:
        """Whether a local connection is routed to `symbol`."""
        return self.subscriptions.routed(symbol)
