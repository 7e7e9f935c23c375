"""Fan-out: unthrottled routes, and the flush that sends the outboxes that got ticks.

The step per subscriber per tick is `Outbox.put` and a flag: no encoding, no I/O, no
task. Connections that got ticks are flushed together once per loop turn (or after
`flush_delay`), directly when their socket takes data at once, else by their writer.
A flush round writes with the connections' raw writers synchronously, in the loop
callback itself (no task); only connections without one need a task to await `send`.
Fairness: each round starts 1/FAIR_STEPS of the way further along the list, so a
connection written last in one round is not last in the next.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from marketstream.core.closes import Close
from marketstream.core.connection import Connection
from marketstream.core.outbox import Outbox
from marketstream.core.tick import EncodedTick
from marketstream.core.writer import FrameWriter

log = logging.getLogger(__name__)

FAIR_STEPS = 16  # a flush round starts 1/16 of its connections further on than the previous one

Put = Callable[[Outbox, EncodedTick], bool]


class Fanout:
    """Routes of throttle 0 (symbol -> connections) and the flush of every outbox."""

    def __init__(self, clock: Callable[[], float], flush_delay: float, slow_client_timeout: float) -> None:
        self.clock = clock
        self.flush_delay = flush_delay
        self.slow_client_timeout = slow_client_timeout
        self.routes: dict[str, set[Connection]] = {}
        self._dirty: list[Connection] = []
        self._scheduled = False
        self._flushing: set[asyncio.Task[None]] = set()
        self._round = 0
        self.frames = FrameWriter()

    def route(self, conn: Connection, symbol: str) -> None:
        self.routes.setdefault(symbol, set()).add(conn)

    def unroute(self, conn: Connection, symbol: str) -> None:
        subscribers = self.routes.get(symbol)
        if subscribers is not None:
            subscribers.discard(conn)
            if not subscribers:
                del self.routes[symbol]

    def deliver(self, tick: EncodedTick) -> None:
        """Put `tick` into the outbox of every unthrottled subscriber of its symbol.

        The step per subscriber per tick, so its common case is inlined: the tick is the
        next seq of its symbol on that connection, nothing of the symbol waits in `latest`
        and the outbox has room; that is exactly what `Outbox.put` does then (append, and
        the seq remembered). Anything else goes through `Outbox.put`.
        """
        subscribers = self.routes.get(tick.symbol)
        if not subscribers:
            return
        symbol = tick.symbol
        previous = tick.seq - 1
        dirty = self._dirty
        for conn in subscribers:
            outbox = conn.outbox
            last_seq = outbox.last_seq
            ticks = outbox.ticks
            if last_seq.get(symbol) == previous and not outbox.latest and len(ticks) < outbox.max_ticks:
                last_seq[symbol] = previous + 1
                ticks.append(tick)
            elif not outbox.put(tick):
                continue
            if not conn.dirty:
                conn.dirty = True
                dirty.append(conn)
        if dirty and not self._scheduled:
            self._schedule()

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
        later = self._flush_round()
        if later:
            task = asyncio.get_running_loop().create_task(self._drain_direct(later))
            self._flushing.add(task)  # keep a reference until it is done
            task.add_done_callback(self._flushing.discard)

    async def _flush(self) -> None:
        """One whole flush round, awaited (tests)."""
        later = self._flush_round()
        if later:
            await self._drain_direct(later)

    def _flush_round(self) -> list[Connection]:
        """Send the outboxes that got ticks: written at once with the raw writer when the
        socket takes data at once, else by waking the connection's writer. A client
        behind for longer than `slow_client_timeout` is closed with 1013 instead.
        Returns the ready connections without a raw writer, for `_drain_direct`."""
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        n = len(dirty)
        if n > 1:
            self._round += 1
            start = (self._round % FAIR_STEPS) * n // FAIR_STEPS
            if start:
                dirty = dirty[start:] + dirty[:start]
        for conn in dirty:
            conn.dirty = False
        now = self.clock()
        timeout = self.slow_client_timeout
        frames = self.frames
        frames.new_round()
        later: list[Connection] = []
        for conn in dirty:
            try:
                if conn.is_behind(now, timeout):
                    conn.close(Close.TRY_AGAIN_LATER, f"behind for more than {timeout:g} s")
                elif conn.ready():
                    if conn.write is not None:
                        conn.write_now(frames)
                    else:
                        later.append(conn)
                else:
                    conn.wake()
            except Exception:
                log.exception("hub: flushing connection %s failed", conn.session)
        frames.new_round()
        return later

    async def _drain_direct(self, conns: list[Connection]) -> None:
        """The rest of a flush round: connections sent through their async `send`."""
        for conn in conns:
            try:
                if conn.ready():
                    await conn.drain(direct=True)
                else:
                    conn.wake()
            except Exception:
                log.exception("hub: flushing connection %s failed", conn.session)
