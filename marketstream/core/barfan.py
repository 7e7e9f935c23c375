"""Bar routes: bar updates to the connections that asked for bars, under their throttle.

Only bar subscribers pay for bars: ticks never pass here, and a hub without a bar
subscriber of a symbol does not even receive its bar updates (it joins the symbol's bars
group only for them). A bar update is encoded once per process (`EncodedBar`), for the
intervals some local subscriber wants.

Per symbol there is one bucket per throttle in use. Throttle 0: each bar goes straight
into the outbox of every subscriber that wants its interval (`Outbox.put_bar` conflates
what is still pending). Throttle T: the bucket keeps the newest version of each bar (per
interval and start: a final bar and the next open one are both kept) and, at the end of
each interval, puts them into its subscribers' outboxes, once per process however many
updates came. A subscriber whose last bars of the symbol came less than T ago (it just
moved from another throttle) keeps its bars in `held` until it is due: no bar, final ones
above all, is ever dropped for a subscriber that wants it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from marketstream.core.bars import Bar, BarUpdate, EncodedBar
from marketstream.core.connection import Connection
from marketstream.core.fanout import Fanout
from marketstream.core.outbox import BarKey
from marketstream.core.throttle import NEVER, TIMER_SLACK, sleep_until

log = logging.getLogger(__name__)

Pending = dict[BarKey, EncodedBar]


def _keep(pending: Pending, bar: EncodedBar) -> None:
    """Keep `bar` in `pending` unless a version as new is there."""
    held = pending.get(bar.key)
    if held is None or held.rank < bar.rank:
        pending[bar.key] = bar


class BarBucket:
    """The bar subscribers of one symbol at one throttle, with what waits for them."""

    __slots__ = ("held", "pending", "subscribers", "symbol", "throttle", "wanted")

    def __init__(self, symbol: str, throttle: int) -> None:
        self.symbol = symbol
        self.throttle = throttle
        self.subscribers: dict[Connection, tuple[str, ...]] = {}  # connection -> its intervals
        self.wanted: Counter[str] = Counter()  # interval -> subscribers that want it
        self.pending: Pending = {}  # throttled: the newest version of each bar since the last end
        self.held: dict[Connection, Pending] = {}  # throttled: bars of subscribers not yet due


class BarTimer:
    """The buckets of one throttle value, served together at the end of each interval."""

    def __init__(self, throttle: int) -> None:
        self.throttle = throttle
        self.seconds = throttle / 1000
        self.buckets: dict[BarBucket, None] = {}
        self.last_fire = NEVER
        self.task: asyncio.Task[None] | None = None


class BarFan:
    """Bar routes per symbol and throttle, and one timer per throttle value in use."""

    def __init__(self, fanout: Fanout, clock: Callable[[], float]) -> None:
        self.fanout = fanout
        self.clock = clock
        self.routes: dict[str, dict[int, BarBucket]] = {}  # symbol -> throttle -> bucket
        self.timers: dict[int, BarTimer] = {}
        self.updates = 0  # bar updates received for a routed symbol

    def routed(self, symbol: str) -> bool:
        """Whether a local connection wants bars of `symbol`."""
        return symbol in self.routes

    def route(self, conn: Connection, symbol: str, intervals: tuple[str, ...], throttle: int) -> None:
        """Deliver the bars of `intervals` of `symbol` to `conn` at `throttle`, replacing its
        earlier bar route of the symbol (its bars held back come along); no intervals:
        no bars. Updates `conn.bars`."""
        buckets = self.routes.get(symbol, {})
        old = next((t for t, b in buckets.items() if conn in b.subscribers), None)
        if not intervals:  # no bars: what it had still to get is dropped with the route
            self.unroute(conn, symbol)
            return
        held = self.unroute(conn, symbol, keep_held=True)
        if old == 0 and throttle:  # its last bars may have just left: it waits a whole interval
            conn.bars_sent_at[symbol] = self.clock()
        conn.bars[symbol] = intervals
        buckets = self.routes.setdefault(symbol, {})
        bucket = buckets.get(throttle)
        if bucket is None:
            bucket = buckets[throttle] = BarBucket(symbol, throttle)
            if throttle:
                self._timer(throttle).buckets[bucket] = None
        bucket.subscribers[conn] = intervals
        bucket.wanted.update(intervals)
        if held:
            wanted = [b for b in held.values() if b.bar.interval in intervals]
            if throttle:
                bucket.held[conn] = {b.key: b for b in wanted}
            else:
                self._put(conn, wanted)

    def unroute(self, conn: Connection, symbol: str, keep_held: bool = False) -> Pending:
        """Stop delivering bars of `symbol` to `conn`. Returns its bars held back (with
        `keep_held`, to move them to its new route; else they are dropped)."""
        buckets = self.routes.get(symbol)
        held: Pending = {}
        if buckets is None:
            conn.bars.pop(symbol, None)
            return held
        for throttle, bucket in list(buckets.items()):
            intervals = bucket.subscribers.pop(conn, None)
            if intervals is None:
                continue
            bucket.wanted.subtract(intervals)
            bucket.wanted = +bucket.wanted  # drop the intervals no one wants
            held = bucket.held.pop(conn, {})
            if not bucket.subscribers:
                del buckets[throttle]
                timer = self.timers.get(throttle)
                if timer is not None:
                    timer.buckets.pop(bucket, None)
        if not buckets:
            del self.routes[symbol]
        if not keep_held:
            conn.bars.pop(symbol, None)
            conn.bars_sent_at.pop(symbol, None)
        return held

    def delivered(self, conn: Connection, symbol: str, now: float) -> None:
        """`conn` got bars of `symbol` outside its bucket (the bars snapshot of a subscribe)."""
        conn.bars_sent_at[symbol] = now

    def offer(self, update: BarUpdate) -> None:
        """Deliver (throttle 0) or keep for the end of the interval (throttle T) each bar of
        `update` that a local subscriber wants."""
        buckets = self.routes.get(update.symbol)
        if not buckets:
            return
        self.updates += 1
        for bar in update.bars:
            encoded: EncodedBar | None = None
            interval = bar.interval
            for bucket in buckets.values():
                if not bucket.wanted[interval]:
                    continue
                if encoded is None:
                    encoded = EncodedBar(bar)
                if bucket.throttle:
                    _keep(bucket.pending, encoded)
                else:
                    for conn, intervals in bucket.subscribers.items():
                        if interval in intervals:
                            self._put(conn, [encoded])

    def snapshot(self, conn: Connection, bars: list[Bar]) -> None:
        """Queue `bars` (read from the store on subscribe) for `conn`, conflated with the
        live ones that came meanwhile; counts as a delivery under a throttle."""
        if bars:
            self._put(conn, [EncodedBar(b) for b in bars])

    def _put(self, conn: Connection, bars: list[EncodedBar]) -> None:
        outbox = conn.outbox
        took = False
        for bar in bars:
            took = outbox.put_bar(bar) or took
        if took:
            self.fanout.mark(conn)

    def stop(self) -> None:
        for timer in self.timers.values():
            if timer.task is not None:
                timer.task.cancel()

    def _timer(self, throttle: int) -> BarTimer:
        timer = self.timers.get(throttle)
        if timer is None:
            timer = self.timers[throttle] = BarTimer(throttle)
        if timer.task is None or timer.task.done():
            timer.task = asyncio.get_running_loop().create_task(self._run(timer))
        return timer

    def fire(self, timer: BarTimer) -> None:
        """End of an interval: each bucket's kept bars go to its subscribers that are due
        (their last bars of the symbol came at least an interval ago) and want them; the
        others keep them in `held` until they are."""
        now = self.clock()
        timer.last_fire = now
        seconds = timer.seconds
        for bucket in timer.buckets:
            pending = bucket.pending
            if not pending and not bucket.held:
                continue
            bucket.pending = {}
            symbol = bucket.symbol
            for conn, intervals in bucket.subscribers.items():
                held = bucket.held.get(conn)
                mine = [b for b in pending.values() if b.bar.interval in intervals]
                if now - conn.bars_sent_at.get(symbol, NEVER) >= seconds:
                    if held:
                        del bucket.held[conn]
                        for bar in mine:
                            _keep(held, bar)
                        mine = list(held.values())
                    if mine:
                        conn.bars_sent_at[symbol] = now
                        self._put(conn, mine)
                elif mine:
                    if held is None:
                        held = bucket.held[conn] = {}
                    for bar in mine:
                        _keep(held, bar)

    async def _run(self, timer: BarTimer) -> None:
        # as Throttle._run: each end at least `seconds` after the previous one, by our clock
        clock = self.clock
        timer.last_fire = clock()
        while timer.buckets:
            await sleep_until(clock, timer.last_fire + timer.seconds + TIMER_SLACK)
            try:
                self.fire(timer)
            except Exception:
                timer.last_fire = clock()
                log.exception("hub: bar interval %d ms failed", timer.throttle)
        self.timers.pop(timer.throttle, None)
