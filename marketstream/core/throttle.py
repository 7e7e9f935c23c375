"""Throttled routes: conflated once per process, per symbol and throttle.

The newest tick of a symbol waits in the bucket of each throttle that symbol has; at the
end of each interval it is put into the outbox of every subscriber of that bucket. Work
per subscriber grows with what is delivered, not with what comes in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from marketstream.core.connection import Connection
from marketstream.core.fanout import Fanout
from marketstream.core.outbox import Outbox
from marketstream.core.tick import EncodedTick

log = logging.getLogger(__name__)

NEVER = float("-inf")  # the last delivery time of a symbol never delivered
TIMER_SLACK = 0.005  # seconds added to each throttle interval: room for jitter between fire and socket


class Bucket:
    """The subscribers of one symbol at one throttle, and its conflated tick.

    `subscribers` are in step with the interval: each got its last delivery of the
    symbol at an earlier end of this interval, so each is due at every end. `waiting`
    holds the others (new, or coming from another throttle) until `sent_at` says they
    are due; then they join `subscribers`.
    """

    __slots__ = ("last", "pending", "subscribers", "symbol", "waiting")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.subscribers: set[Connection] = set()
        self.waiting: set[Connection] = set()
        self.pending: EncodedTick | None = None  # newest tick not yet delivered
        self.last: EncodedTick | None = None  # newest tick delivered


class Interval:
    """All buckets of one throttle value, fired together at the end of each interval."""

    def __init__(self, throttle: int) -> None:
        self.throttle = throttle
        self.seconds = throttle / 1000
        self.buckets: dict[Bucket, None] = {}  # in creation order: a stable delivery order
        self.last_fire = NEVER
        self.task: asyncio.Task[None] | None = None


class Throttle:
    """Buckets per (symbol, throttle) and one timer task per throttle value in use."""

    def __init__(self, fanout: Fanout, clock: Callable[[], float]) -> None:
        self.fanout = fanout
        self.clock = clock  # monotonic seconds: interval ends are checked against it
        self.buckets: dict[str, dict[int, Bucket]] = {}  # symbol -> throttle -> bucket
        self.intervals: dict[int, Interval] = {}

    def offer(self, tick: EncodedTick) -> None:
        """Make `tick` the newest of its symbol in every bucket of that symbol."""
        buckets = self.buckets.get(tick.symbol)
        if buckets:
            for bucket in buckets.values():
                bucket.pending = tick

    def route(self, conn: Connection, symbol: str, throttle: int) -> None:
        """Route `symbol` to `conn` at `throttle` (> 0). It waits for its first delivery
        until `throttle` ms after the symbol's last delivery to `conn` (`conn.sent_at`)."""
        buckets = self.buckets.setdefault(symbol, {})
        bucket = buckets.get(throttle)
        if bucket is None:
            bucket = buckets[throttle] = Bucket(symbol)
            self._interval(throttle).buckets[bucket] = None
        bucket.waiting.add(conn)

    def delivered(self, conn: Connection, symbol: str, throttle: int, now: float) -> None:
        """`conn` got `symbol` at `now` outside its bucket (its snapshot): it waits a whole
        interval for the next delivery, even if an interval end admitted it meanwhile."""
        bucket = self.buckets.get(symbol, {}).get(throttle)
        if bucket is None:
            return
        conn.sent_at[symbol] = now
        if conn in bucket.subscribers:
            bucket.subscribers.discard(conn)
            bucket.waiting.add(conn)

    def unroute(self, conn: Connection, symbol: str, throttle: int) -> None:
        """Take `conn` off the route of `symbol` at `throttle`, leaving the time of its last
        delivery in `conn.sent_at` (at most the interval's last end)."""
        buckets = self.buckets.get(symbol, {})
        bucket = buckets.get(throttle)
        if bucket is None:
            return
        interval = self.intervals.get(throttle)
        if conn in bucket.subscribers:
            bucket.subscribers.discard(conn)
            if interval is not None:
                conn.sent_at[symbol] = interval.last_fire
        bucket.waiting.discard(conn)
        if not bucket.subscribers and not bucket.waiting:
            del buckets[throttle]
            if not buckets:
                del self.buckets[symbol]
            if interval is not None:
                interval.buckets.pop(bucket, None)

    def subscribers(self, symbol: str) -> set[Connection]:
        """Every connection with a throttled route of `symbol`."""
        found: set[Connection] = set()
        for bucket in self.buckets.get(symbol, {}).values():
            found |= bucket.subscribers
            found |= bucket.waiting
        return found

    def reset(self, symbol: str) -> None:
        """The symbol's seq restarted: forget its pending and last ticks."""
        for bucket in self.buckets.get(symbol, {}).values():
            bucket.pending = bucket.last = None

    def stop(self) -> None:
        for interval in self.intervals.values():
            if interval.task is not None:
                interval.task.cancel()

    def _interval(self, throttle: int) -> Interval:
        interval = self.intervals.get(throttle)
        if interval is None:
            interval = self.intervals[throttle] = Interval(throttle)
        if interval.task is None or interval.task.done():
            interval.task = asyncio.get_running_loop().create_task(self._run(interval))
        return interval

    def fire(self, interval: Interval) -> None:
        """End of an interval: put each bucket's newest tick into its subscribers' outboxes.

        Members of `bucket.subscribers` were served at an earlier end of this interval,
        and ends are at least `interval.seconds` apart, so they are due without a check.
        A waiting connection is due when `interval.seconds` have passed since its last
        delivery of the symbol (`sent_at`: its snapshot, or its previous throttle); it
        then gets the bucket's newest tick and joins the subscribers.
        """
        now = self.clock()
        interval.last_fire = now
        seconds = interval.seconds
        put = self.fanout.put
        for bucket in interval.buckets:
            admitted: list[Connection] = []
            if bucket.waiting:
                symbol = bucket.symbol
                for conn in list(bucket.waiting):
                    if now - conn.sent_at.get(symbol, NEVER) >= seconds:
                        bucket.waiting.discard(conn)
                        bucket.subscribers.add(conn)
                        conn.sent_at.pop(symbol, None)
                        admitted.append(conn)
            tick = bucket.pending
            if tick is not None:
                bucket.pending = None
                bucket.last = tick
                targets: Iterable[Connection] = bucket.subscribers
            elif admitted and bucket.last is not None:
                tick, targets = bucket.last, admitted
            else:
                continue
            put(targets, tick, Outbox.put_latest)

    async def _run(self, interval: Interval) -> None:
        # Each end comes `seconds` (plus a little slack) after the time the previous fire
        # served its subscribers: never early for them, however late that fire was, and
        # the time a fire takes does not stretch the interval.
        clock = self.clock
        interval.last_fire = clock()
        while interval.buckets:
            # The loop's timers run on its own clock (uvloop's is cached per iteration and
            # can wake a sleeper early by the length of a busy iteration): check ours.
            due = interval.last_fire + interval.seconds + TIMER_SLACK
            await sleep_until(clock, due)
            try:
                self.fire(interval)
            except Exception:
                interval.last_fire = clock()
                log.exception("hub: throttle interval %d ms failed", interval.throttle)
        self.intervals.pop(interval.throttle, None)


async def sleep_until(clock: Callable[[], float], due: float) -> None:
    """Sleep until `clock()` reaches `due`, however early the loop's timers fire."""
    left = due - clock()
    while left > 0:
        await asyncio.sleep(left)
        left = due - clock()
