"""Fan-out: unthrottled routes, and the flush that sends the outboxes that got ticks.

The step per subscriber per tick is `Outbox.put` and a flag: no encoding, no I/O, no
task. Connections that got ticks are flushed directly when their socket takes data at
once, else by their writer: all together once per loop turn, or, with a `flush_delay`,
each on a cadence of its own (`Stagger`): a connection is flushed every `flush_delay`
seconds at most, at a phase drawn when it connected, so a tick waits at most
`flush_delay` in the hub and the connections' frames spread evenly over time instead of
leaving in one long round after each delay (whose last connections waited for the
whole round too).
A flush round writes with the connections' raw writers synchronously, in the loop
callback itself (no task); only connections without one need a task to await `send`.
Fairness: each round starts 1/FAIR_STEPS of the way further along the list, so a
connection written last in one round is not last in the next.

Latency is sampled per flush, not per frame: a countdown of the connections flushed picks
about one in `Stats.sample_every` of them (at random places in their round) and records
the age of the first tick each had pending once its frame went out (`Stats.sample_latency`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable

from marketstream.core.closes import Close
from marketstream.core.connection import Connection
from marketstream.core.outbox import Outbox
from marketstream.core.stats import Stats
from marketstream.core.tick import EncodedTick
from marketstream.core.writer import FrameWriter

log = logging.getLogger(__name__)

FAIR_STEPS = 16  # a flush round starts 1/16 of its connections further on than the previous one
# seconds: with a flush delay, connections are flushed in slots of about this length
# (2, 5 and 10 ms measured alike in the fanout scenario)
SLOT = 0.005
MAX_SLOTS = 64  # phases per flush delay at most

Put = Callable[[Outbox, EncodedTick], bool]
Probe = tuple[Connection, EncodedTick, int]  # a latency probe: connection, first pending tick, ticks sent before


class Fanout:
    """Routes of throttle 0 (symbol -> connections) and the flush of every outbox."""

    def __init__(
        self, clock: Callable[[], float], flush_delay: float, slow_client_timeout: float, stats: Stats | None = None
    ) -> None:
        self.clock = clock
        self.slow_client_timeout = slow_client_timeout
        self.stats = stats if stats is not None else Stats()  # the hub's: latency samples
        self.routes: dict[str, set[Connection]] = {}
        self._dirty: list[Connection] = []
        self._scheduled = False
        self.stagger = Stagger(flush_delay) if flush_delay > 0 else None
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
        """Flush on the next loop turn; with a flush delay, place the connections that got
        something in their slots on the next loop turn (once per turn, not per tick)."""
        self._scheduled = True
        loop = asyncio.get_running_loop()
        loop.call_soon(self._start_flush if self.stagger is None else self._place)

    def stop(self) -> None:
        for task in self._flushing:
            task.cancel()
        if self.stagger is not None:
            self.stagger.cancel()

    def _place(self) -> None:
        """Put the connections that got something since the last turn in their next slot."""
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        assert self.stagger is not None
        self.stagger.place(dirty, asyncio.get_running_loop(), self._start_flush)

    def _start_flush(self, conns: list[Connection] | None = None) -> None:
        """A flush round of `conns` (a slot's), or of every connection marked since the last."""
        if conns is None:
            self._scheduled = False
            conns, self._dirty = self._dirty, []
        later, probes = self._flush_round(conns)
        if later:
            task = asyncio.get_running_loop().create_task(self._drain_direct(later, probes))
            self._flushing.add(task)  # keep a reference until it is done
            task.add_done_callback(self._flushing.discard)

    async def _flush(self) -> None:
        """Flush every connection that waits, now, in one round, awaited (tests)."""
        self._scheduled = False
        conns, self._dirty = self._dirty, []
        if self.stagger is not None:
            conns = self.stagger.take_all() + conns
        later, probes = self._flush_round(conns)
        if later:
            await self._drain_direct(later, probes)

    def _flush_round(self, dirty: list[Connection]) -> tuple[list[Connection], list[Probe]]:
        """Send the outboxes of `dirty` (connections that got something): written at once
        with the raw writer when the socket takes data at once, else by waking the
        connection's writer. A client behind for longer than `slow_client_timeout` is
        closed with 1013 instead. Returns the ready connections without a raw writer, for
        `_drain_direct`, and the round's latency probes whose frame has not gone out yet."""
        n = len(dirty)
        if n > 1:
            self._round += 1
            start = (self._round % FAIR_STEPS) * n // FAIR_STEPS
            if start:
                dirty = dirty[start:] + dirty[:start]
        for conn in dirty:
            conn.dirty = False
        stats = self.stats
        stats.sample_countdown -= n
        probes = self._probes(dirty) if stats.sample_countdown <= 0 else []
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
        return later, self._sample(probes) if probes else probes

    def _probes(self, dirty: list[Connection]) -> list[Probe]:
        """About one connection in `stats.sample_every` of those flushed (k of this round's
        at random places; the countdown carries over between rounds), each with the first
        tick it has pending and its count of ticks sent so far."""
        stats = self.stats
        every = stats.sample_every
        k = 1 + (-stats.sample_countdown) // every
        stats.sample_countdown += k * every
        picked = random.sample(dirty, min(k, len(dirty)))
        return [(conn, tick, conn.ticks_sent) for conn in picked if (tick := conn.outbox.first_tick()) is not None]

    def _sample(self, probes: list[Probe]) -> list[Probe]:
        """Record the latency of each probe whose frame went out; return the others."""
        waiting: list[Probe] = []
        for probe in probes:
            conn, tick, sent = probe
            if conn.ticks_sent > sent:
                self.stats.sample_latency(tick)
            elif conn.close_code is None:
                waiting.append(probe)
        return waiting

    async def _drain_direct(self, conns: list[Connection], probes: list[Probe]) -> None:
        """The rest of a flush round: connections sent through their async `send`, then
        the round's remaining latency probes (a frame that still waits is not sampled)."""
        for conn in conns:
            try:
                if conn.ready():
                    await conn.drain(direct=True)
                else:
                    conn.wake()
            except Exception:
                log.exception("hub: flushing connection %s failed", conn.session)
        if probes:
            self._sample(probes)


class Stagger:
    """The slots of a flush delay: each connection is flushed at its own phase of a cycle
    of `delay` seconds, so at most `delay` after it got something, and the connections
    of a cycle leave spread over `slots` rounds instead of one.

    The cycle is cut in `slots` slots (about SLOT seconds each, at most MAX_SLOTS); a
    connection's phase (`Connection.phase`, drawn when it was made) picks its slot. A
    connection that got something is placed in the next start of its slot (strictly
    after now), where one timer flushes every connection placed there.
    """

    __slots__ = ("_due", "slot", "slots")

    def __init__(self, delay: float) -> None:
        self.slots = max(1, min(MAX_SLOTS, round(delay / SLOT)))
        self.slot = delay / self.slots
        self._due: dict[int, tuple[list[Connection], asyncio.TimerHandle]] = {}

    def place(
        self, conns: list[Connection], loop: asyncio.AbstractEventLoop, flush: Callable[[list[Connection]], None]
    ) -> None:
        """Queue each of `conns` (marked dirty) for its next slot; a new slot gets a timer."""
        slots, slot, due = self.slots, self.slot, self._due
        now = int(loop.time() / slot)  # the slot that runs now
        for conn in conns:
            at = now + (int(conn.phase * slots) - now - 1) % slots + 1
            waiting = due.get(at)
            if waiting is None:
                due[at] = ([conn], loop.call_at(at * slot, self._fire, at, flush))
            else:
                waiting[0].append(conn)

    def _fire(self, at: int, flush: Callable[[list[Connection]], None]) -> None:
        waiting = self._due.pop(at, None)
        if waiting is not None:
            flush(waiting[0])

    def take_all(self) -> list[Connection]:
        """Every connection waiting for its slot (their timers cancelled)."""
        conns: list[Connection] = []
        for waiting, timer in self._due.values():
            timer.cancel()
            conns += waiting
        self._due = {}
        return conns

    def cancel(self) -> None:
        """Cancel every slot's timer (shutdown)."""
        self.take_all()
