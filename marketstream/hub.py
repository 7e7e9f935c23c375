"""The hub: one per process, the process-local fan-out of ticks to connections.

The hub owns a single channel on the channel layer and joins the group of a symbol
while at least one local connection subscribes to it. A tick therefore crosses the
channel layer once per process (one Redis PUBLISH per tick, one decode per hub), and
the step per subscriber per tick is a plain call that puts pre-encoded bytes into an
outbox (docs/design.md explains the choice and its numbers).

Throttled subscriptions are conflated once per process, per symbol and throttle: the
newest tick waits in a bucket, and at the end of each interval it is put into the
outbox of every subscriber of that bucket. Work per subscriber grows with what is
delivered, not with what comes in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from marketstream.connection import Connection
from marketstream.store import Store
from marketstream.symbols import group_name
from marketstream.tick import EncodedTick

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


class Hub:
    """Process-local fan-out. Create with `Hub(...)`, then `await hub.start()`."""

    def __init__(
        self,
        layer: Any,
        store: Store,
        group_prefix: str,
        slow_client_timeout: float = 5.0,
        flush_delay: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.layer = layer
        self.store = store
        self.group_prefix = group_prefix
        self.slow_client_timeout = slow_client_timeout
        self.flush_delay = flush_delay
        self.clock = clock  # monotonic seconds; throttle intervals and slow-client timing
        self.channel = ""
        self.zero: dict[str, set[Connection]] = {}  # symbol -> throttle-0 subscribers
        self.buckets: dict[str, dict[int, Bucket]] = {}  # symbol -> throttle -> bucket
        self.intervals: dict[int, Interval] = {}
        self.joined: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._dirty: list[Connection] = []
        self._flush_scheduled = False
        self._flushing: set[asyncio.Task[None]] = set()
        self._receiver: asyncio.Task[None] | None = None
        self._leaving: set[asyncio.Task[None]] = set()
        self.connections: set[Connection] = set()
        self.ticks_received = 0
        self.layer_errors = 0
        self.bad_messages = 0
        self.closed_ticks_sent = 0  # ticks and frames sent to connections that are gone
        self.closed_frames = 0
        self.last_message: float | None = None  # clock() when the layer last delivered a message
        self.slow_closes = 0  # counted by whoever closes the connection (conn.kill)

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        if self._receiver is None:
            # The default prefix matters on the core RedisChannelLayer: its process-wide
            # receive lock serves one "specific." channel per process, shared by all.
            self.channel = await self.layer.new_channel()
            self._receiver = asyncio.get_running_loop().create_task(self._receive_loop(), name="hub-receiver")

    async def stop(self) -> None:
        """Cancel the hub's tasks (shutdown)."""
        tasks = [self._receiver, *(i.task for i in self.intervals.values()), *self._flushing, *self._leaving]
        for task in tasks:
            if task is not None:
                task.cancel()
        self._receiver = None

    @property
    def alive(self) -> bool:
        return self._receiver is not None and not self._receiver.done()

    async def _receive_loop(self) -> None:
        receive = self.layer.receive
        channel = self.channel
        on_tick = self.on_tick
        while True:
            try:
                message = await receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.layer_errors += 1
                log.exception("hub: cannot receive from the channel layer; retrying in 1 s")
                await asyncio.sleep(1.0)
                continue
            self.last_message = self.clock()
            try:
                if message.get("type") == "tick":
                    on_tick(EncodedTick.from_message(message))
            except Exception:  # one bad message must not stop the others
                self.bad_messages += 1
                if self.bad_messages <= 10 or self.bad_messages % 1000 == 0:
                    log.exception("hub: dropped a malformed channel-layer message (%d so far)", self.bad_messages)

    # -- the tick path --------------------------------------------------------------

    def on_tick(self, tick: EncodedTick) -> None:
        """Hand one tick to every local subscriber of its symbol."""
        self.ticks_received += 1
        symbol = tick.symbol
        subscribers = self.zero.get(symbol)
        if subscribers:
            dirty = self._dirty
            for conn in subscribers:
                if conn.outbox.put(tick) and not conn.dirty:
                    conn.dirty = True
                    dirty.append(conn)
            if dirty and not self._flush_scheduled:
                self._schedule_flush()
        buckets = self.buckets.get(symbol)
        if buckets:
            for bucket in buckets.values():
                bucket.pending = tick

    def _schedule_flush(self) -> None:
        self._flush_scheduled = True
        loop = asyncio.get_running_loop()
        if self.flush_delay > 0:
            loop.call_later(self.flush_delay, self._start_flush)
        else:
            loop.call_soon(self._start_flush)

    def _start_flush(self) -> None:
        task = asyncio.get_running_loop().create_task(self._flush())
        self._flushing.add(task)  # keep a reference until it is done
        task.add_done_callback(self._flushing.discard)

    async def _flush(self) -> None:
        """Send the outboxes that got ticks: directly when the socket takes data at once
        (no task switch per frame), else by waking the connection's writer."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.dirty = False
        now = self.clock()
        timeout = self.slow_client_timeout
        for conn in dirty:
            try:
                if conn.is_behind(now, timeout):
                    conn.give_up(f"behind for more than {timeout:g} s")
                elif conn.ready():
                    await conn.drain(direct=True)
                else:
                    conn.wake()
            except Exception:
                log.exception("hub: flushing connection %s failed", conn.session)

    def _fire(self, interval: Interval) -> None:
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
        dirty = self._dirty
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
            for conn in targets:
                if conn.outbox.put_latest(tick) and not conn.dirty:
                    conn.dirty = True
                    dirty.append(conn)
        if dirty and not self._flush_scheduled:
            self._schedule_flush()

    async def _run_interval(self, interval: Interval) -> None:
        # Each end comes `seconds` (plus a little slack) after the time the previous fire
        # served its subscribers: never early for them, however late that fire was, and
        # the time a fire takes does not stretch the interval.
        clock = self.clock
        interval.last_fire = clock()
        while interval.buckets:
            # The loop's timers run on its own clock (uvloop's is cached per iteration and
            # can wake a sleeper early by the length of a busy iteration): check ours.
            due = interval.last_fire + interval.seconds + TIMER_SLACK
            await _sleep_until(clock, due)
            try:
                self._fire(interval)
            except Exception:
                interval.last_fire = clock()
                log.exception("hub: throttle interval %d ms failed", interval.throttle)
        self.intervals.pop(interval.throttle, None)

    # -- subscriptions --------------------------------------------------------------

    def add(self, conn: Connection, symbols: Iterable[str], throttle: int) -> list[str]:
        """Route `symbols` to `conn` at `throttle` (replacing an earlier throttle).

        A throttled route starts waiting: its first delivery comes at the first end of
        the interval at least `throttle` ms after the symbol's last delivery (see
        `sent_at`; a route that leaves throttle 0 counts as delivered now).
        Returns the symbols that this process does not receive yet: await `join`
        on them before reading their snapshot.
        """
        new: list[str] = []
        for symbol in symbols:
            old = conn.subscriptions.get(symbol)
            if old == throttle:
                continue
            if old is not None:
                self._unroute(conn, symbol, old)
            conn.subscriptions[symbol] = throttle
            if throttle == 0:
                conn.sent_at.pop(symbol, None)
                self.zero.setdefault(symbol, set()).add(conn)
            else:
                if old == 0:
                    conn.sent_at[symbol] = self.clock()
                buckets = self.buckets.setdefault(symbol, {})
                bucket = buckets.get(throttle)
                if bucket is None:
                    bucket = buckets[throttle] = Bucket(symbol)
                    self._interval(throttle).buckets[bucket] = None
                bucket.waiting.add(conn)
            if symbol not in self.joined:
                new.append(symbol)
        return new

    def _interval(self, throttle: int) -> Interval:
        interval = self.intervals.get(throttle)
        if interval is None:
            interval = self.intervals[throttle] = Interval(throttle)
        if interval.task is None or interval.task.done():
            interval.task = asyncio.get_running_loop().create_task(self._run_interval(interval))
        return interval

    def _unroute(self, conn: Connection, symbol: str, throttle: int) -> None:
        """Take `conn` off the route of `symbol` at `throttle`. A throttled route leaves
        the time of its last delivery in `conn.sent_at` (at most the interval's last end)."""
        if throttle == 0:
            subscribers = self.zero.get(symbol)
            if subscribers is not None:
                subscribers.discard(conn)
                if not subscribers:
                    del self.zero[symbol]
            return
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

    def remove(self, conn: Connection, symbols: Iterable[str]) -> list[str]:
        """Stop routing `symbols` to `conn`. Returns the symbols it was subscribed to.

        After this returns, the hub puts no tick of these symbols into `conn`'s outbox.
        """
        removed = []
        for symbol in symbols:
            throttle = conn.subscriptions.pop(symbol, None)
            if throttle is None:
                continue
            self._unroute(conn, symbol, throttle)
            conn.sent_at.pop(symbol, None)
            removed.append(symbol)
            if not self._routed(symbol):
                task = asyncio.get_running_loop().create_task(self._leave(symbol))
                self._leaving.add(task)  # keep a reference until it is done
                task.add_done_callback(self._leaving.discard)
        return removed

    def _routed(self, symbol: str) -> bool:
        return symbol in self.zero or symbol in self.buckets

    async def join(self, symbols: Iterable[str]) -> None:
        """Make sure this process receives the ticks of `symbols` (group_add)."""
        for symbol in symbols:
            if symbol in self.joined:
                continue
            async with self._lock(symbol):
                if symbol not in self.joined and self._routed(symbol):
                    await self.layer.group_add(group_name(self.group_prefix, symbol), self.channel)
                    self.joined.add(symbol)

    async def _leave(self, symbol: str) -> None:
        async with self._lock(symbol):
            if symbol in self.joined and not self._routed(symbol):
                self.joined.discard(symbol)
                try:
                    await self.layer.group_discard(group_name(self.group_prefix, symbol), self.channel)
                except Exception:
                    log.exception("hub: group_discard for %s failed", symbol)

    def _lock(self, symbol: str) -> asyncio.Lock:
        lock = self._locks.get(symbol)
        if lock is None:
            lock = self._locks[symbol] = asyncio.Lock()
        return lock

    def attach(self, conn: Connection) -> None:
        self.connections.add(conn)

    def detach(self, conn: Connection) -> None:
        """Forget a connection (disconnect), keeping its counts in the hub's totals."""
        self.remove(conn, list(conn.subscriptions))
        if conn in self.connections:
            self.connections.discard(conn)
            self.closed_ticks_sent += conn.ticks_sent
            self.closed_frames += conn.frames


async def _sleep_until(clock: Callable[[], float], due: float) -> None:
    """Sleep until `clock()` reaches `due`, however early the loop's timers fire."""
    left = due - clock()
    while left > 0:
        await asyncio.sleep(left)
        left = due - clock()
