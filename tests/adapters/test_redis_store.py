"""The Redis store on the real Redis: catalog, seq authority, snapshots, history, bad entries."""

from __future__ import annotations

from marketstream.adapters.redis_store import RedisStore
from marketstream.core.symbols import SymbolInfo
from marketstream.core.tick import Draft


def draft(symbol: str) -> Draft:
    return Draft.encode({"symbol": symbol, "ts": 1, "price": 1.0, "size": 1.0, "bid": 1.0, "ask": 1.0})


async def test_register_and_known(store: RedisStore) -> None:
    await store.register(["AAPL", "EUR/USD"])
    await store.register([])
    assert await store.known(["AAPL", "MSFT", "EUR/USD"]) == [True, False, True]
    assert await store.known([]) == []


async def test_descriptions_keep_the_last_said_of_each_symbol(store: RedisStore) -> None:
    assert await store.descriptions() == {}
    await store.describe({"AAPL": SymbolInfo("Apple", "equity", 1.0), "EUR/USD": SymbolInfo("Euro", "fx", None)})
    await store.describe({"AAPL": SymbolInfo("Apple Inc.", "equity", 227.5)})
    await store.describe({})
    await store.redis.hset(store.info_key, "BAD", b"not json")
    await store.redis.hset(store.info_key, "WORSE", b'{"name": 1}')
    assert await store.descriptions() == {
        "AAPL": SymbolInfo("Apple Inc.", "equity", 227.5),
        "EUR/USD": SymbolInfo("Euro", "fx", None),
    }, "entries that are not descriptions are skipped"


async def test_append_keeps_the_last_tick_and_the_catalog(store: RedisStore) -> None:
    await store.append([draft("AAPL"), draft("AAPL"), draft("MSFT")])
    assert await store.append([]) == []
    snaps = await store.snapshots(["AAPL", "MSFT", "IBM"])
    assert {s: t.seq for s, t in snaps.items()} == {"AAPL": 2, "MSFT": 1}
    assert snaps["AAPL"].msgpack == draft("AAPL").complete(2).msgpack
    assert await store.snapshots([]) == {}
    catalog = await store.catalog()
    assert list(catalog) == ["AAPL", "MSFT"]
    assert all(t is not None and t.symbol == s for s, t in catalog.items())


async def test_a_registered_symbol_without_a_tick_is_in_the_catalog_with_none(store: RedisStore) -> None:
    await store.register(["IBM"])
    assert await store.catalog() == {"IBM": None}


async def test_an_entry_that_is_not_a_tick_is_skipped(store: RedisStore) -> None:
    await store.append([draft("AAPL")])
    await store.redis.hset(store.snapshot_key, "BAD", b"\xc1not msgpack")
    await store.register(["BAD"])
    assert "BAD" not in await store.snapshots(["AAPL", "BAD"])
    assert (await store.catalog())["BAD"] is None


async def test_ping(store: RedisStore) -> None:
    await store.ping()


async def test_history_is_bounded_and_read_both_ways(redis_store_short: RedisStore) -> None:
    store = redis_store_short
    for _ in range(30):
        await store.append([draft("AAPL")] * 10)
    whole = await store.history("AAPL", None, 10_000)
    assert whole.last_seq == 300 and whole.ticks[-1].seq == 300
    assert 100 <= len(whole.ticks) < 300, "trimmed near the configured length (Redis trims approximately)"
    assert whole.first_seq == whole.ticks[0].seq
    assert [t.seq for t in whole.ticks] == list(range(whole.first_seq, 301)), "no gap inside history"
    last = await store.history("AAPL", None, 5)
    assert [t.seq for t in last.ticks] == [296, 297, 298, 299, 300], "the last ticks, oldest first"
    after = await store.history("AAPL", 290, 3)
    assert [t.seq for t in after.ticks] == [291, 292, 293] and after.epoch == whole.epoch
    assert (await store.history("AAPL", 300, 10)).ticks == []
    assert (await store.history("NONE", None, 10)) == (await store.history("NONE", 5, 10))
    tails = await store.tails({"AAPL": 0, "NONE": 0}, 2)
    assert [t.seq for t in tails["AAPL"].ticks] == [299, 300] and tails["NONE"].last_seq == 0
    newer = (await store.tails({"AAPL": 297}, 100))["AAPL"]
    assert [t.seq for t in newer.ticks] == [298, 299, 300], "read back only to the seq given"
    assert all(t.json == draft("AAPL").complete(t.seq).json for t in newer.ticks), "JSON kept as published"


async def test_a_seq_past_fourteen_digits_is_kept_whole(store: RedisStore) -> None:
    """publish.lua writes the seq as an integer everywhere: in the history entry's ID, the
    JSON and the msgpack (Lua's default number format has 14 significant digits, which
    would have made the ID `1e+15-0`, an XADD error)."""
    start = 10**15 - 1
    await store.redis.hset(store.seq_key, "AAPL", start)
    await store.redis.hset(store.epoch_key, "AAPL", "e-big")
    (first, second) = await store.append([draft("AAPL"), draft("AAPL")])
    assert (first.seq, second.seq, second.epoch) == (start + 1, start + 2, "e-big")
    assert second.json.endswith(b'"seq":%d}' % (start + 2)), second.json
    assert second.msgpack == draft("AAPL").complete(start + 2).msgpack
    history = await store.history("AAPL", None, 10)
    assert [t.seq for t in history.ticks] == [start + 1, start + 2]
    entries = await store.redis.xrange(store.history_key("AAPL"))
    assert entries is not None
    assert [entry_id for entry_id, _ in entries] == [b"%d-0" % (start + 1), b"%d-0" % (start + 2)]
