"""The publisher: seq continues from the snapshots, each tick is encoded once, and a
batch is published in order as one step of the transport."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import orjson
import pytest

from feeds.publisher import Publisher
from feeds.simulated import Quote
from marketstream.core.store import MemoryStore
from marketstream.core.tick import EncodedTick
from tests.unit.core.fakes import FakeTransport, tick


def quote(symbol: str, price: float = 10.0) -> Quote:
    return (symbol, price, 100.0, price - 0.01, price + 0.01)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def transport(store: MemoryStore) -> FakeTransport:
    return FakeTransport(store)


async def test_prepare_registers_and_continues_seq_from_the_snapshots(
    store: MemoryStore, transport: FakeTransport
) -> None:
    await store.save([tick("AAPL", 41)])
    publisher = Publisher(store, transport)
    await publisher.prepare(["AAPL", "MSFT"])
    assert publisher.seq == {"AAPL": 41, "MSFT": 0}
    assert await store.known(["AAPL", "MSFT"]) == [True, True]
    ticks = await publisher.publish([quote("AAPL"), quote("MSFT"), quote("AAPL")])
    assert [(t.symbol, t.seq) for t in ticks] == [("AAPL", 42), ("MSFT", 1), ("AAPL", 43)]


async def test_a_restarted_publisher_continues_where_the_last_one_stopped(
    store: MemoryStore, transport: FakeTransport
) -> None:
    first = Publisher(store, transport)
    await first.prepare(["AAPL"])
    await first.publish([quote("AAPL")] * 3)
    second = Publisher(store, transport)
    await second.prepare(["AAPL"])
    assert [t.seq for t in await second.publish([quote("AAPL")])] == [4]


async def test_each_tick_is_encoded_once(
    store: MemoryStore, transport: FakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = EncodedTick.encode

    def encode(tick: Any) -> EncodedTick:
        calls.append(tick["symbol"])
        return real(tick)

    monkeypatch.setattr(EncodedTick, "encode", encode)
    publisher = Publisher(store, transport)
    await publisher.prepare(["AAPL", "MSFT"])
    ticks = await publisher.publish([quote("AAPL"), quote("MSFT"), quote("AAPL")])
    assert calls == ["AAPL", "MSFT", "AAPL"]
    assert transport.published == [ticks], "the transport gets the very objects encoded"
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
    expected = {"symbol": "EUR/USD", "seq": 1, "price": 1.0845, "size": 100_000.0, "bid": 1.0844, "ask": 1.0846}
    decoded = msgpack.unpackb(t.msgpack)
    assert {k: v for k, v in decoded.items() if k != "ts"} == expected
    assert before <= decoded["ts"] <= after and decoded["ts"] == u.decode()["ts"], "one stamp per batch"
    assert orjson.loads(t.json) == decoded


async def test_a_symbol_not_prepared_starts_at_seq_1(store: MemoryStore, transport: FakeTransport) -> None:
    publisher = Publisher(store, transport)
    assert [t.seq for t in publisher.stamp([quote("NEW"), quote("NEW")])] == [1, 2]
    assert transport.published == [], "stamp does not publish"


async def test_a_failed_publish_raises(store: MemoryStore, transport: FakeTransport) -> None:
    publisher = Publisher(store, transport)

    async def broken(ticks: Any) -> None:
        raise ConnectionError("transport down")

    transport.publish = broken  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await publisher.publish([quote("A")])
    assert store.last == {}
