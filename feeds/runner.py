"""Runs a feed at a steady rate until stopped: the loop behind `manage.py runfeed` and
the embedded feed of `make run`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

from feeds.publisher import Publisher
from feeds.simulated import SimulatedFeed

log = logging.getLogger(__name__)

STEP = 0.01  # seconds between batches at high rates
FINALIZE_DELAY = 0.002  # seconds after each whole second (UTC) at which ended bars are made final


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
    """Publish `rate` ticks per second (over all symbols) until `stop` is set, `duration`
    seconds pass or `max_ticks` are sent. The symbols go into the catalog first, with
    their names, kinds and reference prices. Returns the number of ticks published after
    the opening: with `opening`, one tick per symbol first, so every symbol has a
    snapshot from the start. `ready` is set once the symbols are in the catalog and the
    opening is published.

    Falling behind by more than a second's worth of ticks is reported in the log, with
    the rate actually reached; the feed then catches up without bursting past a second.
    With `bars`, a timer makes the feed's bars final as their intervals end.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0 ticks/s, got {rate}")
    symbols = [i.symbol for i in feed.instruments]
    await publisher.prepare(symbols, feed.infos())
    timer = asyncio.get_running_loop().create_task(finalize_bars(publisher, symbols, stop)) if bars else None
    try:
        return await _run(feed, publisher, rate, stop, duration, max_ticks, opening, ready)
    finally:
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer


async def finalize_bars(publisher: Publisher, symbols: list[str], stop: asyncio.Event) -> None:
    """Just after each whole second, make final the bars of `symbols` that ended, until `stop`."""
    while not stop.is_set():
        due = math.floor(time.time()) + 1 + FINALIZE_DELAY
        while (left := due - time.time()) > 0 and not stop.is_set():  # never early: the bar must have ended
            await _sleep_or_stop(stop, left)
        if stop.is_set():
            return
        try:
            await publisher.finalize_bars(symbols)
        except Exception:
            log.exception("feed: making bars final failed; trying again in a second")


async def _run(
    feed: SimulatedFeed,
    publisher: Publisher,
    rate: float,
    stop: asyncio.Event,
    duration: float | None,
    max_ticks: int | None,
    opening: bool,
    ready: asyncio.Event | None,
) -> int:
    if opening:
        await publisher.publish(feed.opening())
    if ready is not None:
        ready.set()
    step = max(STEP, min(1.0, 1.0 / rate))
    burst = max(1, int(rate))  # the most one batch may carry: a second's worth
    start = time.monotonic()
    sent = 0
    last_report = start
    while not stop.is_set():
        now = time.monotonic()
        elapsed = now - start
        if duration is not None and elapsed >= duration:
            break
        due = int(elapsed * rate) + 1 - sent
        if due > burst:  # more than a second behind
            if now - last_report > 5.0:
                log.warning("feed: behind by %d ticks; reaching %.0f of %.0f ticks/s", due, sent / elapsed, rate)
                last_report = now
            start += (due - burst) / rate  # skip what cannot be caught up
            due = burst
        if max_ticks is not None:
            due = min(due, max_ticks - sent)
        if due > 0:
            try:
                await publisher.publish(feed.batch(due))
            except Exception:
                log.exception("feed: publishing failed; retrying in 1 s")
                await _sleep_or_stop(stop, 1.0)
                continue
            sent += due
        if max_ticks is not None and sent >= max_ticks:
            break
        # wake when the next tick is due, but no sooner than one step: batches at high rates
        await _sleep_or_stop(stop, max(start + sent / rate, now + step) - time.monotonic())
    return sent


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        await asyncio.sleep(0)
        return
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
