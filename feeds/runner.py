"""Runs a feed source until stopped: the loop behind `manage.py runfeed` and the embedded
feed of `make run`.

A **source** (the `Source` protocol) names its symbols up front and yields batches of
quotes, each when it is due; `run_source` registers the symbols, publishes every batch
through the publisher (which stamps `ts`, and whose store assigns seq and computes
bars) and makes the bars final on time. Sources: `SimulatedSource` (the random walk at
a steady rate, below) and `feeds.replay.ReplaySource` (recorded ticks at their original
timing). HTTP ingest (`feeds.ingest`) is not a source: requests push their ticks into
the same `Publisher.publish`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol

from feeds.publisher import Publisher
from feeds.simulated import Quote, SimulatedFeed, TimedQuote
from marketstream.core.symbols import SymbolInfo
from marketstream.core.transport import Unavailable

log = logging.getLogger(__name__)

STEP = 0.01  # seconds between batches at high rates
FINALIZE_DELAY = 0.002  # seconds after each whole second (UTC) at which ended bars are made final
RETRY = 1.0  # seconds before a batch whose publishing failed is published again


class Source(Protocol):
    """A feed source for `run_source`."""

    def symbols(self) -> list[str]:
        """Every symbol the source will publish (registered in the catalog first; their
        bars are made final on time)."""
        ...

    def infos(self) -> Mapping[str, SymbolInfo]:
        """What the catalog says of the symbols it knows (name, kind, reference price)."""
        ...

    def batches(self, stop: asyncio.Event) -> AsyncIterator[Sequence[Quote | TimedQuote]]:
        """Batches of quotes, each yielded when it is due (`ts` is stamped when it is
        published), until the source ends or `stop` is set. A quote of six fields carries
        the source's own time, kept as the tick's `src_ts`."""
        ...


def lag_of(source: Source) -> float:
    """How late the source's last batch was against its schedule, seconds: its `lag`
    attribute (the simulated walk's and the replay's), 0 for a source without one."""
    lag = getattr(source, "lag", 0.0)
    return float(lag) if isinstance(lag, (int, float)) else 0.0


async def run_source(
    source: Source,
    publisher: Publisher,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    bars: bool = True,
) -> int:
    """Publish the source's batches until it ends or `stop` is set; returns the number of
    ticks published. `ready` is set once the symbols are in the catalog and the first
    batch is published. A batch whose publishing fails is published again a second later
    (nothing a source yields is dropped), unless it fails because the shard of some of its
    symbols is down (`Unavailable`): those ticks are dropped, the others were published, and
    the shard monitor logs what and how many. With `bars`, a timer makes the bars of the
    source's symbols final as their intervals end."""
    symbols = source.symbols()
    await publisher.prepare(symbols, source.infos())
    timer = asyncio.get_running_loop().create_task(finalize_bars(publisher, symbols, stop)) if bars else None
    sent = 0
    try:
        async for batch in source.batches(stop):
            while True:
                try:
                    await publisher.publish(batch)
                    break
                except Unavailable:  # some shard is down: its ticks are dropped (the shard monitor logs it)
                    break
                except Exception:
                    log.exception("feed: publishing failed; retrying in %.0f s", RETRY)
                    await sleep_or_stop(stop, RETRY)
                    if stop.is_set():
                        return sent
            sent += len(batch)
            publisher.stats.lag_s = lag_of(source)
            if ready is not None:
                ready.set()
        return sent
    finally:
        if ready is not None:
            ready.set()
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer


async def run_feed(
    feed: SimulatedFeed,
    publisher: Publisher,
    rate: float,
    stop: asyncio.Event,
    duration: float | None = None,
    max_ticks: int | None = None,
    opening: bool = True,
    ready: asyncio.Event | None = None,
    bars: bool = True,
) -> int:
    """The simulated walk at `rate` ticks/s (`SimulatedSource`) through `run_source`.
    Returns the number of ticks published after the opening."""
    source = SimulatedSource(feed, rate, duration, max_ticks, opening)
    await run_source(source, publisher, stop, ready, bars)
    return source.sent


class SimulatedSource:
    """The simulated feed at a steady `rate` (ticks/s over all symbols), until `duration`
    seconds pass or `max_ticks` are yielded. With `opening`, one quote per symbol first,
    so every symbol has a snapshot from the start (not counted in `sent`).

    Falling behind by more than a second's worth of ticks is reported in the log, with
    the rate actually reached; the source then catches up without bursting past a second.
    """

    def __init__(
        self,
        feed: SimulatedFeed,
        rate: float,
        duration: float | None = None,
        max_ticks: int | None = None,
        opening: bool = True,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 ticks/s, got {rate}")
        self.feed = feed
        self.rate = rate
        self.duration = duration
        self.max_ticks = max_ticks
        self.opening = opening
        self.sent = 0  # ticks yielded after the opening
        self.lag = 0.0  # seconds the last batch was late against the steady rate

    def symbols(self) -> list[str]:
        return [i.symbol for i in self.feed.instruments]

    def infos(self) -> dict[str, SymbolInfo]:
        return self.feed.infos()

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[Sequence[Quote | TimedQuote]]:
        if stop.is_set():
            return
        if self.opening:
            yield self.feed.opening()
        rate = self.rate
        step = max(STEP, min(1.0, 1.0 / rate))
        burst = max(1, int(rate))  # the most one batch may carry: a second's worth
        start = time.monotonic()
        last_report = start
        while not stop.is_set():
            now = time.monotonic()
            elapsed = now - start
            if self.duration is not None and elapsed >= self.duration:
                break
            due = int(elapsed * rate) + 1 - self.sent
            if due > burst:  # more than a second behind
                if now - last_report > 5.0:
                    log.warning(
                        "feed: behind by %d ticks; reaching %.0f of %.0f ticks/s", due, self.sent / elapsed, rate
                    )
                    last_report = now
                start += (due - burst) / rate  # skip what cannot be caught up
                due = burst
            if self.max_ticks is not None:
                due = min(due, self.max_ticks - self.sent)
            if due > 0:
                self.lag = max(0.0, now - (start + self.sent / rate))  # when the first of these was due
                yield self.feed.batch(due)
                self.sent += due
            if self.max_ticks is not None and self.sent >= self.max_ticks:
                break
            # wake when the next tick is due, but no sooner than one step: batches at high rates
            await sleep_or_stop(stop, max(start + self.sent / rate, now + step) - time.monotonic())


async def finalize_bars(publisher: Publisher, symbols: Sequence[str], stop: asyncio.Event) -> None:
    """Just after each whole second, make final the bars of `symbols` that ended, until
    `stop`. `symbols` is read each time (a list updated in place works: HTTP ingest's)."""
    while not stop.is_set():
        due = math.floor(time.time()) + 1 + FINALIZE_DELAY
        while (left := due - time.time()) > 0 and not stop.is_set():  # never early: the bar must have ended
            await sleep_or_stop(stop, left)
        if stop.is_set():
            return
        if not symbols:
            continue
        try:
            await publisher.finalize_bars(list(symbols))
        except Exception:
            log.exception("feed: making bars final failed; trying again in a second")


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set meanwhile."""
    if seconds <= 0:
        await asyncio.sleep(0)
        return
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
