"""The feed loop keeps its rate, low rates included, and stops when told."""

from __future__ import annotations

import asyncio

from feeds.publisher import Publisher
from feeds.runner import run_feed
from feeds.simulated import SimulatedFeed
from feeds.universe import generated
from marketstream.store import MemoryStore


class NullLayer:
    def __init__(self) -> None:
        self.sent = 0

    async def group_send(self, group: str, message: dict) -> None:
        self.sent += 1


async def test_a_rate_below_one_tick_per_second_still_publishes() -> None:
    layer = NullLayer()
    publisher = Publisher(layer, MemoryStore(), "tick")
    sent = await run_feed(
        SimulatedFeed(generated(3), seed=1), publisher, 2.0, asyncio.Event(), duration=1.2, opening=False
    )
    assert sent >= 2 and layer.sent == sent
    low = await run_feed(
        SimulatedFeed(generated(3), seed=1), publisher, 0.5, asyncio.Event(), duration=0.5, opening=False
    )
    assert low == 1, "the first tick is due at once"


async def test_the_feed_keeps_its_rate_and_seq_increases() -> None:
    store = MemoryStore()
    publisher = Publisher(NullLayer(), store, "tick")
    sent = await run_feed(SimulatedFeed(generated(5), seed=2), publisher, 200.0, asyncio.Event(), duration=1.0)
    assert 180 <= sent <= 215
    assert sum(publisher.seq.values()) == sent + 5, "plus one opening tick per symbol"
    assert all(store.last[s].seq == publisher.seq[s] for s in publisher.seq)


async def test_stop_ends_the_feed() -> None:
    stop = asyncio.Event()
    publisher = Publisher(NullLayer(), MemoryStore(), "tick")
    task = asyncio.create_task(run_feed(SimulatedFeed(generated(2), seed=3), publisher, 50.0, stop))
    await asyncio.sleep(0.2)
    stop.set()
    assert await asyncio.wait_for(task, 1.0) > 0
