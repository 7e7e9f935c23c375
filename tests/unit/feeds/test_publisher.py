"""The publisher: each tick encoded once as a draft; its seq comes from the store (the seq
authority), so it continues across restarts and is shared by every publisher of a symbol;
a batch is published in order as one step of the transport."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import msgpack
import orjson
import pytest

from feeds.publisher import Publisher
from feeds.simulated import Quote
from marketstream.core.store import MemoryStore
from marketstream.core.symbols import SymbolInfo
from marketstream.core.tick import Draft, EncodedTick
from tests.unit.core.fakes import FakeTransport, draft


def quote(symbol: str, price: float = 10.0) -> Quote:
    return (symbol, price, 100.0, price - 0.01, price + 0.01)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def transport(store: MemoryStore) -> FakeTransport:
    return FakeTransport(store)


class RecordingTransport(FakeTransport):
    """Records the drafts it is handed, batch by batch."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.drafts: list[list[Draft]] = []

    async def publish(self, drafts: Sequence[Draft]) -> list[EncodedTick]:
        self.drafts.append(list(drafts))
        return await super().publish(drafts)


async def test_prepare_registers_the_symbols(store: MemoryStore, transport: FakeTransport) -> None:
    publisher = Publisher(store, transport)
    await publisher.prepare(["AAPL", "MSFT"])
    assert await store.known(["AAPL", "MSFT", "IBM"]) == [True, True, False]
    assert await store.snapshots(["AAPL", "MSFT"]) == {}, "registering publishes nothing"
    assert transport.published == []


async def test_prepare_describes_the_symbols(store: MemoryStore, transport: FakeTransport) -> None:
    publisher = Publisher(store, transport)
    await publisher.prepare(["AAPL"], {"AAPL": SymbolInfo("Apple Inc.", "equity", 227.5)})
    assert await store.descriptions() == {"AAPL": SymbolInfo("Apple Inc.", "equity", 227.5)}


async def test_seq_comes_from_the_store(store: MemoryStore, transport: FakeTransport) -> None:
    await store.append([draft("AAPL") for _ in range(41)])  # another publisher got there first
    publisher = Publisher(store, transport)
    await publisher.prepare(["AAPL", "MSFT"])
    ticks = await publisher.publish([quote("AAPL"), quote("MSFT"), quote("AAPL")])
    assert [(t.symbol, t.seq) for t in ticks] == [("AAPL", 42), ("MSFT", 1), ("AAPL", 43)]
    assert [t.epoch for t in ticks] == [store.epochs["AAPL"], store.epochs["MSFT"], store.epochs["AAPL"]]
    assert all(t.epoch for t in ticks)


async def test_a_restarted_publisher_continues_where_the_last_one_stopped(
    store: MemoryStore, transport: FakeTransport
) -> None:
    first = Publisher(store, transport)
    await first.prepare(["AAPL"])
    before = await first.publish([quote("AAPL")] * 3)
    second = Publisher(store, FakeTransport(store))
    await second.prepare(["AAPL"])
    (after,) = await second.publish([quote("AAPL")])
    assert (after.seq, after.epoch) == (4, before[0].epoch)


async def test_a_symbol_not_prepared_starts_at_seq_1(store: MemoryStore, transport: FakeTransport) -> None:
    publisher = Publisher(store, transport)
    assert [t.seq for t in await publisher.publish([quote("NEW"), quote("NEW")])] == [1, 2]
    assert await store.known(["NEW"]) == [True], "the store catalogs what it keeps"


async def test_the_transport_gets_drafts_without_seq(store: MemoryStore) -> None:
    transport = RecordingTransport(store)
    publisher = Publisher(store, transport)
    ticks = await publisher.publish([quote("A", 1.0), quote("B", 2.0)])
    (drafts,) = transport.drafts
    assert [d.symbol for d in drafts] == ["A", "B"]
    for d, t in zip(drafts, ticks, strict=True):
        assert isinstance(d, Draft)
        assert d.complete(t.seq, t.epoch).msgpack == t.msgpack and d.complete(t.seq).json == t.json
        assert b'"seq"' not in d.json_head[:-7], "seq comes last, from the authority"


async def test_stamp_makes_drafts_and_publishes_nothing(store: MemoryStore, transport: FakeTransport) -> None:
    publisher = Publisher(store, transport)
    drafts = publisher.stamp([quote("NEW"), quote("NEW", 11.0)])
    assert [d.symbol for d in drafts] == ["NEW", "NEW"]
    assert [d.complete(1).decode()["price"] for d in drafts] == [10.0, 11.0]
    assert transport.published == [] and store.last == {}


async def test_each_tick_is_encoded_once(
    store: MemoryStore, transport: FakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = Draft.encode.__func__  # type: ignore[attr-defined]

    def encode(cls: type[Draft], fields: dict[str, Any]) -> Draft:
        calls.append(fields["symbol"])
        draft: Draft = real(cls, fields)
        return draft

    def never(*args: Any) -> EncodedTick:
        raise AssertionError("a whole tick is never encoded on the publish path")

    monkeypatch.setattr(Draft, "encode", classmethod(encode))
    monkeypatch.setattr(EncodedTick, "encode", never)
    publisher = Publisher(store, transport)
    await publisher.prepare(["AAPL", "MSFT"])
    ticks = await publisher.publish([quote("AAPL"), quote("MSFT"), quote("AAPL")])
    assert calls == ["AAPL", "MSFT", "AAPL"]
    assert transport.published == [ticks], "one publish, the ticks the authority completed"
    assert all(store.last[t.symbol] is t for t in (ticks[1], ticks[2]))


async def test_a_batch_is_one_publish_in_quote_order(store: MemoryStore, transport: FakeTransport) -> None:
    publisher = Publisher(store, transport)
    await publisher.prepare(["A", "B"])
    await publisher.publish([quote("A", 1.0), quote("B", 2.0)])
    await publisher.publish([quote("B", 3.0), quote("A", 4.0), quote("A", 5.0)])
    assert [[(t.symbol, t.seq, t.decode()["price"]) for t in batch] for batch in transport.published] == [
        [("A", 1, 1.0), ("B", 1, 2.0)],
        [("B", 2, 3.0), ("A", 2, 4.0), ("A", 3, 5.0)],
    ]


async def test_an_empty_batch_publishes_nothing(store: MemoryStore, transport: FakeTransport) -> None:
    publisher = Publisher(store, transport)
    assert await publisher.publish([]) == []
    assert transport.published == []


async def test_the_tick_carries_the_quote_and_a_wall_clock_ts(store: MemoryStore, transport: FakeTransport) -> None:
    publisher = Publisher(store, transport)
    before = time.time_ns()
    (t, u) = await publisher.publish([("EUR/USD", 1.0845, 100_000.0, 1.0844, 1.0846), quote("AAPL")])
    after = time.time_ns()
    expected = {"symbol": "EUR/USD", "price": 1.0845, "size": 100_000.0, "bid": 1.0844, "ask": 1.0846, "seq": 1}
    decoded = msgpack.unpackb(t.msgpack)
    assert {k: v for k, v in decoded.items() if k != "ts"} == expected
    keys = list(decoded)
    assert (keys[0], keys[-1]) == ("symbol", "seq"), "symbol first, seq last"
    assert before <= decoded["ts"] <= after and decoded["ts"] == u.decode()["ts"], "one stamp per batch"
    assert orjson.loads(t.json) == decoded


async def test_two_publishers_on_one_store_share_one_gap_free_seq(store: MemoryStore) -> None:
    """Feed workers, HTTP ingest and replay publish one symbol at once: one seq, in
    publish order, no gap, no duplicate."""
    one, two = RecordingTransport(store), RecordingTransport(store)
    publishers = [Publisher(store, one), Publisher(store, two)]

    async def run(publisher: Publisher, price: float) -> None:
        for _ in range(25):
            await publisher.publish([quote("AAPL", price), quote("MSFT", price), quote("AAPL", price)])
            await asyncio.sleep(0)

    await asyncio.gather(run(publishers[0], 1.0), run(publishers[1], 2.0))
    ticks = [t for transport in (one, two) for batch in transport.published for t in batch]
    aapl = sorted((t.seq, t.decode()["price"]) for t in ticks if t.symbol == "AAPL")
    assert [seq for seq, _ in aapl] == list(range(1, 101))
    assert {price for _, price in aapl} == {1.0, 2.0}
    assert sorted(t.seq for t in ticks if t.symbol == "MSFT") == list(range(1, 51))
    assert len({t.epoch for t in ticks if t.symbol == "AAPL"}) == 1
    assert store.last["AAPL"].seq == 100
    mine = [[t.seq for batch in tr.published for t in batch if t.symbol == "AAPL"] for tr in (one, two)]
    assert all(seqs == sorted(seqs) for seqs in mine), "each publisher's ticks in its publish order"
    assert min(mine[1]) < max(mine[0]) and min(mine[0]) < max(mine[1]), "the publishers interleaved"


async def test_a_failed_publish_raises(store: MemoryStore, transport: FakeTransport) -> None:
    publisher = Publisher(store, transport)

    async def broken(drafts: Any) -> list[EncodedTick]:
        raise ConnectionError("transport down")

    transport.publish = broken  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await publisher.publish([quote("A")])
    assert store.last == {}


async def test_a_quote_with_its_sources_time_keeps_it_as_src_ts() -> None:
    store = MemoryStore()
    publisher = Publisher(store, FakeTransport(store))
    await publisher.prepare(["AAPL"])
    (timed, plain) = await publisher.publish(
        [("AAPL", 1.0, 2.0, 0.9, 1.1, 1_700_000_000_123_456_789), ("AAPL", 1.0, 2.0, 0.9, 1.1)]
    )
    assert (
        timed.decode()["src_ts"] == 1_700_000_000_123_456_789
        and orjson.loads(timed.json)["src_ts"] == 1_700_000_000_123_456_789
    )
    assert "src_ts" not in plain.decode()
    history = await store.history("AAPL", None, 10)
    assert history.ticks[0].decode()["src_ts"] == 1_700_000_000_123_456_789, "kept through history"


async def test_a_batch_encoded_before_the_lock_is_stamped_again_when_a_second_began(
    store: MemoryStore, transport: FakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches are encoded outside the lock; one that waited across a whole second (a bar
    may have been made final meanwhile), or after a batch stamped later, gets a new ts."""
    clock = [1_764_150_000_900_000_000]
    monkeypatch.setattr("feeds.publisher.now_ns", lambda: clock[0])
    publisher = Publisher(store, transport)
    await publisher._lock.acquire()
    waiting = asyncio.ensure_future(publisher.publish([quote("AAPL")]))
    await asyncio.sleep(0)  # stamped at .900, now waiting for the lock
    clock[0] += 200_000_000  # the next second began
    publisher._lock.release()
    (tick,) = await waiting
    assert tick.decode()["ts"] == 1_764_150_001_100_000_000, "stamped again inside the lock"
    (same,) = await publisher.publish([quote("AAPL")])
    assert same.decode()["ts"] == clock[0], "no second began, no later batch went first: stamped once"
