"""Bars on the real Redis (bars.lua in publish.lua and finalize.lua): the same bars as the
embedded store's on any sequence of batches, final once however many publishers, a new
publisher continues the open bar, the bars kept; and their way to a hub on the pub/sub layer."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import pytest
from channels_redis.pubsub import RedisPubSubChannelLayer

from marketstream.adapters.redis_store import RedisStore, connect
from marketstream.adapters.transport import PubSubTransport, bars_message, from_message
from marketstream.core.bars import INTERVALS, NS, Bar, BarUpdate
from marketstream.core.store import MemoryStore
from marketstream.core.tick import Draft, EncodedTick
from tests.adapters.conftest import REDIS_URL

HOUR = 1_699_999_200  # a whole hour, UTC


def draft(symbol: str, at: float, price: float, size: float = 1.0) -> Draft:
    ts = round((HOUR + at) * NS)
    return Draft.encode({"symbol": symbol, "ts": ts, "price": price, "size": size, "bid": 0.0, "ask": 0.0})


def ns(at: float) -> int:
    return round((HOUR + at) * NS)


@pytest.fixture
async def stores(prefix: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two stores on one prefix (two publishers), keeping 50 final bars."""
    clients = [connect(REDIS_URL), connect(REDIS_URL)]
    yield RedisStore(clients[0], prefix, 100, 50), RedisStore(clients[1], prefix, 100, 50)
    keys = [k async for k in clients[0].scan_iter(f"{prefix}:*")]
    if keys:
        await clients[0].delete(*keys)
    for client in clients:
        await client.aclose()


def as_tuples(bars: list[Bar]) -> list[tuple[object, ...]]:
    return [(b.symbol, b.interval, b.start, b.open, b.high, b.low, b.close, b.volume, b.count, b.final) for b in bars]


async def test_redis_computes_the_bars_the_embedded_store_computes(stores: tuple[RedisStore, RedisStore]) -> None:
    redis_store, _ = stores
    memory = MemoryStore(100, 50)
    rnd = random.Random(3)
    at = 3000.0
    for _ in range(120):
        batch = []
        for _ in range(rnd.randint(1, 6)):
            at += rnd.expovariate(2.0)
            late = rnd.random() < 0.1  # another publisher's clock, behind
            when = at - rnd.uniform(0, 8) if late else at
            price = round(rnd.uniform(99, 101), rnd.choice([0, 2, 5]))
            batch.append(draft(rnd.choice(["AAPL", "EUR/USD"]), when, price, float(rnd.randint(1, 9)) / 4))
        await redis_store.append(batch)
        memory.append_with_bars(batch)
        if rnd.random() < 0.3:
            now = ns(at + rnd.uniform(0, 2))
            assert await redis_store.finalize_bars(["AAPL", "EUR/USD"], now) == await memory.finalize_bars(
                ["AAPL", "EUR/USD"], now
            )
    for symbol in ("AAPL", "EUR/USD"):
        for interval in INTERVALS:
            got = await redis_store.bars(symbol, interval, 1000)
            assert as_tuples(got) == as_tuples(await memory.bars(symbol, interval, 1000)), (symbol, interval)
            assert [type(b.count) for b in got] == [int] * len(got)
        assert as_tuples((await redis_store.open_bars([symbol]))[symbol]) == as_tuples(
            (await memory.open_bars([symbol]))[symbol]
        )
    assert await redis_store.open_bars(["IBM"]) == {} and await redis_store.open_bars([]) == {}


async def test_bars_are_made_final_once_whoever_asks_and_a_new_publisher_continues_them(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    first, second = stores
    await first.append([draft("AAPL", 0.1, 10.0), draft("AAPL", 0.2, 11.0)])
    await second.append([draft("AAPL", 0.3, 9.0)])  # another publisher (or the first, restarted)
    (bar,) = [b for b in (await first.open_bars(["AAPL"]))["AAPL"] if b.interval == "1s"]
    assert (bar.open, bar.high, bar.low, bar.close, bar.count) == (10.0, 11.0, 9.0, 9.0, 3), "one bar, from Redis"
    assert await first.finalize_bars(["AAPL"], ns(0.999)) == 0
    assert await first.finalize_bars(["AAPL"], ns(1.0)) == 1
    assert await second.finalize_bars(["AAPL"], ns(1.5)) == 0, "already final"
    assert [b.final for b in await second.bars("AAPL", "1s", 10)] == [True]
    await second.append([draft("AAPL", 0.9, 50.0)])  # late: its bar is final
    assert (await first.bars("AAPL", "1s", 10))[0].count == 3
    assert (await first.bars("AAPL", "1m", 10))[0].count == 4, "still in the open minute"


async def test_the_last_keep_final_bars_are_kept(stores: tuple[RedisStore, RedisStore]) -> None:
    store, _ = stores
    for second in range(60):
        await store.append([draft("MSFT", second + 0.5, float(second))])
    kept = await store.bars("MSFT", "1s", 1000)
    assert len(kept) == 51 and kept[-1].start == HOUR + 59 and not kept[-1].final, "50 final bars, then the open one"
    assert [b.start - HOUR for b in await store.bars("MSFT", "1s", 3)] == [57, 58, 59]
    assert await store.bars("MSFT", "1s", 0) == []
    assert await store.bars("MSFT", "5m", 10) != [] and await store.bars("IBM", "1s", 10) == []


async def test_bars_keep_zero_computes_no_bars(prefix: str) -> None:
    client = connect(REDIS_URL)
    try:
        store = RedisStore(client, prefix, 100, 0)
        (tick,) = await store.append([draft("AAPL", 0.5, 1.0)])
        assert tick.seq == 1
        assert await store.open_bars(["AAPL"]) == {} and await store.finalize_bars(["AAPL"], ns(10)) == 0
    finally:
        await client.delete(*[k async for k in client.scan_iter(f"{prefix}:*")])
        await client.aclose()


async def test_bar_updates_reach_a_hub_that_joined_the_bars_after_the_ticks(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    prefix = f"layer-{uuid.uuid4().hex[:8]}"
    hub_layer, feed_layer = (
        RedisPubSubChannelLayer(hosts=[{"address": REDIS_URL, "socket_timeout": None}], prefix=prefix) for _ in range(2)
    )
    store, other = stores
    try:
        hub = PubSubTransport(hub_layer, store)
        feed = PubSubTransport(feed_layer, other)
        await hub.open()
        await hub.join("AAPL")
        await hub.join("MSFT")
        await hub.join_bars("AAPL")
        await feed.publish([draft("AAPL", 0.1, 1.0), draft("MSFT", 0.1, 1.0), draft("AAPL", 0.2, 2.0)])
        got = [await asyncio.wait_for(hub.receive(), 5) for _ in range(4)]
        assert [type(g).__name__ for g in got] == ["EncodedTick", "EncodedTick", "EncodedTick", "BarUpdate"], (
            "the ticks, then one update per symbol with bars joined"
        )
        update = got[3]
        assert isinstance(update, BarUpdate) and update.symbol == "AAPL"
        assert [(b.interval, b.count, b.high) for b in update.bars] == [(i, 2, 2.0) for i in INTERVALS]
        assert await feed.finalize_bars(["AAPL", "MSFT"], ns(1.0)) == 2
        final = await asyncio.wait_for(hub.receive(), 5)
        assert isinstance(final, BarUpdate) and [(b.interval, b.final) for b in final.bars] == [("1s", True)]
        await hub.leave_bars("AAPL")
        await feed.publish([draft("AAPL", 1.5, 3.0)])
        tick = await asyncio.wait_for(hub.receive(), 5)
        assert isinstance(tick, EncodedTick)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(hub.receive(), 0.3)
    finally:
        for layer in (hub_layer, feed_layer):
            await layer.flush()


def test_bar_messages_round_trip() -> None:
    update = BarUpdate("FX:GBP_USD", [Bar("FX:GBP_USD", "5m", HOUR, 1.0, 2.0, 0.5, 1.5, 3.25, 7, True)])
    assert from_message(bars_message(update)) == update
    for bad in (
        {"type": "bars"},
        {"type": "bars", "s": "A", "b": [0] * 5, "c": [1], "f": []},
        {"type": "bars", "s": "A", "b": [0] * 40, "c": [1], "f": []},
        {"type": "bars", "s": "A", "b": [0] * 5, "c": [], "f": [[0, 1, 1, 1, 1, 1, 1, 1]]},
        {"type": "bars", "s": "A", "b": [0] * 5, "c": [], "f": [[6, 1, 1, 1, 1, 1, 1, 1]]},
        {"type": "bars", "s": "A", "b": [0] * 5, "c": []},
    ):
        with pytest.raises(ValueError):
            from_message(bad)


async def test_a_batch_of_more_symbols_than_one_write_takes_is_stored_whole(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    """publish.lua writes seqs, snapshots, the catalog and the bars once per call, in
    writes of at most 1,000 arguments: Lua's unpack takes at most 8,000 values, and
    4,100 symbols in one batch make 8,200."""
    store, _ = stores
    count = 4100
    symbols = [f"S{i:04d}" for i in range(count)]
    sent = await store.append([draft(s, 10.5, 100.0 + i) for i, s in enumerate(symbols)])
    assert [(t.symbol, t.seq) for t in sent] == [(s, 1) for s in symbols]
    again = await store.append([draft(s, 11.5, 1.0) for s in symbols])
    assert {t.seq for t in again} == {2}, "every seq was saved"
    snapshots = await store.snapshots(symbols)
    assert sorted(snapshots) == symbols and {t.seq for t in snapshots.values()} == {2}
    assert await store.known(symbols) == [True] * count
    opened = await store.open_bars(symbols)
    assert sorted(opened) == symbols
    first_minute = {s: [b for b in bars if b.interval == "1m"] for s, bars in opened.items()}
    assert all(len(b) == 1 and b[0].count == 2 for b in first_minute.values()), "each symbol's bars were saved"
    assert first_minute["S4099"][0].open == 4199.0 and first_minute["S4099"][0].close == 1.0
