"""The feed loop keeps its rate, low rates included, and stops when told."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from feeds.publisher import Publisher
from feeds.runner import run_feed
from feeds.simulated import SimulatedFeed
from feeds.universe import DEFAULT_UNIVERSE, generated
from marketstream.core.store import MemoryStore
from marketstream.core.tick import Draft, EncodedTick
from tests.unit.core.fakes import FakeTransport


def sent(transport: FakeTransport) -> int:
    return sum(len(batch) for batch in transport.published)


async def test_a_rate_below_one_tick_per_second_still_publishes() -> None:
    transport = FakeTransport()
    publisher = Publisher(MemoryStore(), transport)
    count = await run_feed(
        SimulatedFeed(generated(3), seed=1), publisher, 2.0, asyncio.Event(), duration=1.2, opening=False
    )
    assert count >= 2 and sent(transport) == count
    low = await run_feed(
        SimulatedFeed(generated(3), seed=1), publisher, 0.5, asyncio.Event(), duration=0.5, opening=False
    )
    assert low == 1, "the first tick is due at once"


async def test_the_feed_keeps_its_rate_and_seq_increases() -> None:
    store = MemoryStore()
    publisher = Publisher(store, FakeTransport(store))
    count = await run_feed(SimulatedFeed(generated(5), seed=2), publisher, 200.0, asyncio.Event(), duration=1.0)
    assert 180 <= count <= 215
    assert sum(t.seq for t in store.last.values()) == count + 5, "plus one opening tick per symbol"
    assert len(store.last) == 5
    for symbol, last in store.last.items():
        assert [t.seq for t in store.ticks[symbol]] == list(range(1, last.seq + 1)), "gap-free from 1"


async def test_stop_ends_the_feed() -> None:
    stop = asyncio.Event()
    publisher = Publisher(MemoryStore(), FakeTransport())
    task = asyncio.create_task(run_feed(SimulatedFeed(generated(2), seed=3), publisher, 50.0, stop))
    await asyncio.sleep(0.2)
    stop.set()
    assert await asyncio.wait_for(task, 1.0) > 0


async def test_max_ticks_and_ready() -> None:
    store = MemoryStore()
    transport = FakeTransport(store)
    ready = asyncio.Event()
    count = await run_feed(
        SimulatedFeed(generated(4), seed=4),
        Publisher(store, transport),
        1000.0,
        asyncio.Event(),
        max_ticks=25,
        ready=ready,
    )
    assert count == 25 and sent(transport) == 25 + 4
    assert ready.is_set()
    assert await store.known([i.symbol for i in generated(4)]) == [True] * 4
    assert await store.descriptions() == {i.symbol: i.info() for i in generated(4)}, "with names and references"


async def test_a_failed_publish_is_retried() -> None:
    transport = FakeTransport()
    failures = [ConnectionError("transport down")]
    real = transport.publish

    async def publish(drafts: Sequence[Draft]) -> list[EncodedTick]:
        if failures:
            raise failures.pop()
        return await real(drafts)

    transport.publish = publish  # type: ignore[method-assign]
    count = await run_feed(
        SimulatedFeed(generated(2), seed=5),
        Publisher(MemoryStore(), transport),
        100.0,
        asyncio.Event(),
        duration=1.5,
        max_ticks=3,
        opening=False,
    )
    assert count == 3 and sent(transport) == 3, "after a pause of a second"


async def test_a_rate_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="rate must be > 0"):
        await run_feed(SimulatedFeed(generated(1)), Publisher(MemoryStore(), FakeTransport()), 0, asyncio.Event())


async def test_the_feed_ends_its_bars_on_time_without_ticks() -> None:
    """One tick, then none: the timer makes its 1s bar final just after the second ends."""
    store = MemoryStore()
    transport = FakeTransport(store)
    publisher = Publisher(store, transport)
    stop = asyncio.Event()
    feed = SimulatedFeed(generated(1), seed=4)
    task = asyncio.create_task(run_feed(feed, publisher, 0.01, stop, opening=False))  # one tick, then 100 s of none
    await asyncio.sleep(1.05)  # the tick's second has ended by now
    stop.set()
    await asyncio.wait_for(task, 1.0)
    finals = [b for u in transport.bar_updates for b in u.bars if b.final]
    assert finals[0].interval == "1s" and {b.count for b in finals} == {1}, "made final by the timer"
    assert len(transport.bar_updates) == 2, "its open bars, then their end: once"
    opened = await run_feed(feed, publisher, 0.01, stop, opening=False, bars=False)
    assert opened == 0 and len(transport.bar_updates) == 2, "stopped, and without bars: nothing more"


def test_the_demo_universe_names_every_instrument_and_its_kind() -> None:
    infos = SimulatedFeed(DEFAULT_UNIVERSE).infos()
    assert len(infos) == len(DEFAULT_UNIVERSE) >= 45
    assert all(i.name and i.name != s for s, i in infos.items()), "a name for people, not the symbol again"
    kinds = {i.kind for i in infos.values()}
    assert kinds == {"equity", "etf", "fx", "crypto"}
    assert all(i.reference == inst.price for inst, i in zip(DEFAULT_UNIVERSE, infos.values(), strict=True))
    assert infos["EUR/USD"].kind == "fx" and infos["BTC/USD"].kind == "crypto" and infos["SPY"].kind == "etf"
