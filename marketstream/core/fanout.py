"""Fan-out: unthrottled routes, and the flush that sends the outboxes that got ticks.

The step per subscriber per tick is `Outbox.put` and a flag: no encoding, no I/O, no
task. Connections that got ticks are flushed together once per loop turn (or after
`flush_delay`), directly when their socket takes data at once, else by their writer.

Latency is sampled per flush, not per frame: a countdown of the connections flushed picks
about one in `Stats.sample_every` of them (at random places in their flush) and records
the age of the first tick each had pending when its frame went out (`Stats.sample_latency`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Sequence

from marketstream.core.closes import Close
from marketstream.core.connection import Connection
from marketstream.core.outbox import Outbox
from marketstream.core.stats import Stats
from marketstream.core.tick import EncodedTick

log = logging.getLogger(__name__)

Put = Callable[[Outbox, EncodedTick], bool]


class Fanout:
    """Routes of throttle 0 (symbol -> connections) and the flush of every outbox."""

    def __init__(
        self, clock: Callable[[], float], flush_delay: float, slow_client_timeout: float, stats: Stats | None = None
    ) -> None:
        self.clock = clock
        self.flush_delay = flush_delay
        self.slow_client_timeout = slow_client_timeout
        self.stats = stats if stats is not None else Stats()  # the hub's: latency samples
        self.routes: dict[str, set[Connection]] = {}
        self._dirty: list[Connection] = []
        self._scheduled = False
        self._flushing: set[asyncio.Task[None]] = set()

    def route(self, conn: Connection, symbol: str) -> None:
        self.routes.setdefault(symbol, set()).add(conn)

    def unroute(self, conn: Connection, symbol: str) -> None:
        subscribers = self.routes.get(symbol)
        if subscribers is not None:
            subscribers.discard(conn)
            if not subscribers:
                del self.routes[symbol]

    def deliver(self, tick: EncodedTick) -> None:
        """Put `tick` into the outbox of every unthrottled subscriber of its symbol."""
        subscribers = self.routes.get(tick.symbol)
        if subscribers:
            self.put(subscribers, tick)

    def put(self, targets: Iterable[Connection], tick: EncodedTick, put: Put = Outbox.put) -> None:
        """Put `tick` into each target's outbox with `put` (`Outbox.put` or `put_latest`)
        and have the connections that took it flushed. With `mark` (bars), the only
        places that mark a connection for the flush."""
        dirty = self._dirty
        for conn in targets:
            if put(conn.outbox, tick) and not conn.dirty:
                conn.dirty = True
                dirty.append(conn)
        if dirty and not self._scheduled:
            self._schedule()

    def mark(self, conn: Connection) -> None:
        """Have `conn` flushed with the others (it got something other than a tick: bars)."""
        if not conn.dirty:
            conn.dirty = True
            self._dirty.append(conn)
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        """Flush on the next loop turn, or after `flush_delay` seconds."""
        self._scheduled = True
        loop = asyncio.get_running_loop()
        if self.flush_delay > 0:
            loop.call_later(self.flush_delay, self._start_flush)
        else:
            loop.call_soon(self._start_flush)

    def stop(self) -> None:
        for task in self._flushing:
            task.cancel()

    def _start_flush(self) -> None:
        task = asyncio.get_running_loop().create_task(self._flush())
        self._flushing.add(task)  # keep a reference until it is done
        task.add_done_callback(self._flushing.discard)

    async def _flush(self) -> None:
        """Send the outboxes that got ticks: directly when the socket takes data at once
        (no task switch per frame), else by waking the connection's writer. A client
        behind for longer than `slow_client_timeout` is closed with 1013 instead. About one
        connection in `stats.sample_every` has the latency of its frame sampled."""
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.dirty = False
        now = self.clock()
        stats = self.stats
        stats.sample_countdown -= len(dirty)
        if stats.sample_countdown > 0:
            await self._send(dirty, now)
            return
        # about one connection in `sample_every` of those flushed (one frame in N): k of this
        # flush's, at random places (the later in the flush, the older its ticks)
        every = stats.sample_every
        k = 1 + (-stats.sample_countdown) // every
        stats.sample_countdown += k * every
        start = 0
        for i in sorted(random.sample(range(len(dirty)), min(k, len(dirty)))):
            await self._send(dirty[start:i], now)
            await self._probe(dirty[i], now)
            start = i + 1
        await self._send(dirty[start:], now)

    async def _probe(self, conn: Connection, now: float) -> None:
        """Send to `conn` as `_send` does, and sample the latency of its first pending tick
        if the frame carrying it went out now."""
        tick, sent = conn.outbox.first_tick(), conn.ticks_sent
        await self._send((conn,), now)
        if tick is not None and conn.ticks_sent > sent:
            self.stats.sample_latency(tick)

    async def _send(self, conns: Sequence[Connection], now: float) -> None:
        """Send (or close, or wake) each of `conns`, in order; one failing does not stop the others."""
        timeout = self.slow_client_timeout
        for conn in conns:
            try:
                if conn.is_behind(now, timeout):
                    conn.close(Close.TRY_AGAIN_LATER, f"behind for more than {timeout:g} s")
                elif conn.ready():
                    await conn.drain(direct=True)
                else:
                    conn.wake()
            except Exception:
                log.exception("hub: flushing connection %s failed", conn.session)
