"""The Redis store on the real Redis: catalog, snapshots, and entries that are not ticks."""

from __future__ import annotations

from marketstream.adapters.redis_store import RedisStore
from marketstream.core.tick import EncodedTick


def tick(symbol: str, seq: int) -> EncodedTick:
    return EncodedTick.encode(
        {"symbol": symbol, "seq": seq, "ts": 1, "price": 1.0, "size": 1.0, "bid": 1.0, "ask": 1.0}
    )


async def test_register_and_known(store: RedisStore) -> None:
    await store.register(["AAPL", "EUR/USD"])
    await store.register([])
    assert await store.known(["AAPL", "MSFT", "EUR/USD"]) == [True, False, True]
    assert await store.known([]) == []


async def test_save_keeps_the_last_tick_and_the_catalog(store: RedisStore) -> None:
    await store.save([tick("AAPL", 1), tick("AAPL", 2), tick("MSFT", 5)])
    await store.save([])
    snaps = await store.snapshots(["AAPL", "MSFT", "IBM"])
    assert {s: t.seq for s, t in snaps.items()} == {"AAPL": 2, "MSFT": 5}
    assert snaps["AAPL"].msgpack == tick("AAPL", 2).msgpack
    assert await store.snapshots([]) == {}
    catalog = await store.catalog()
    assert list(catalog) == ["AAPL", "MSFT"]
    assert all(t is not None and t.symbol == s for s, t in catalog.items())


async def test_a_registered_symbol_without_a_tick_is_in_the_catalog_with_none(store: RedisStore) -> None:
    await store.register(["IBM"])
    assert await store.catalog() == {"IBM": None}


async def test_an_entry_that_is_not_a_tick_is_skipped(store: RedisStore) -> None:
    await store.save([tick("AAPL", 3)])
    await store.redis.hset(store.snapshot_key, "BAD", b"\xc1not msgpack")
    await store.register(["BAD"])
    assert "BAD" not in await store.snapshots(["AAPL", "BAD"])
    assert (await store.catalog())["BAD"] is None


async def test_ping(store: RedisStore) -> None:
    await store.ping()
