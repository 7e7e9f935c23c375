"""HTTP ingest's core: per-tick validation, one batch to the publisher, answers by status."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgpack
import pytest

from feeds.ingest import MAX_TICKS, Ingest
from feeds.publisher import Publisher
from marketstream.core.store import MemoryStore
from tests.unit.core.fakes import FakeTransport


def body(ticks: Any) -> bytes:
    return json.dumps({"ticks": ticks}).encode()


def good(symbol: str = "AAPL", price: float = 10.0, **more: Any) -> dict[str, Any]:
    return {"symbol": symbol, "price": price, "size": 5, "bid": price - 0.01, "ask": price + 0.01, **more}


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def ingest(store: MemoryStore) -> Any:
    made = Ingest(Publisher(store, FakeTransport(store)))
    yield made
    await made.close()


async def test_a_good_batch_is_published_in_order_with_its_source_times(ingest: Ingest, store: MemoryStore) -> None:
    answer = await ingest.accept(body([good(), good("msft", 20.0, src_ts=77), good(price=11.0)]), "application/json")
    assert answer.status == 200 and answer.body["accepted"] == 3 and answer.body["rejected"] == []
    assert [(t["index"], t["symbol"], t["seq"]) for t in answer.body["ticks"]] == [
        (0, "AAPL", 1),
        (1, "MSFT", 1),
        (2, "AAPL", 2),
    ]
    assert store.last["MSFT"].decode().get("src_ts") == 77
    assert store.last["AAPL"].decode()["price"] == 11.0 and "src_ts" not in store.last["AAPL"].decode()
    assert await store.known(["AAPL", "MSFT"]) == [True, True], "new symbols enter the catalog"


async def test_bad_ticks_are_rejected_one_by_one_and_the_others_published(ingest: Ingest, store: MemoryStore) -> None:
    answer = await ingest.accept(body([good(), good(price=-1), "x", good(seq=3)]), "application/json")
    assert answer.status == 200 and answer.body["accepted"] == 1
    assert [(r["index"], r["code"], r["field"]) for r in answer.body["rejected"]] == [
        (1, "bad_field", "price"),
        (2, "bad_tick", ""),
        (3, "unknown_field", "seq"),
    ]
    none = await ingest.accept(body([good(price=0)]), "application/json")
    assert none.status == 422 and none.body["accepted"] == 0 and store.last["AAPL"].seq == 1, "nothing published"


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (b"{", "application/json", 400),
        (b"[]", "application/json", 400),
        (json.dumps({"ticks": []}).encode(), "application/json", 400),
        (json.dumps({"ticks": [{}] * (MAX_TICKS + 1)}).encode(), "application/json", 413),
        (b"symbol,price", "text/csv", 415),
    ],
)
async def test_bad_bodies(ingest: Ingest, data: bytes, content_type: str, status: int) -> None:
    answer = await ingest.accept(data, content_type)
    assert answer.status == status and answer.body["error"], answer.body


async def test_msgpack_bodies(ingest: Ingest) -> None:
    answer = await ingest.accept(msgpack.packb({"ticks": [good()]}), "application/msgpack")
    assert answer.status == 200 and answer.body["accepted"] == 1


async def test_a_failed_publish_is_a_503_and_publishes_nothing(store: MemoryStore) -> None:
    transport = FakeTransport(store)

    async def fail(drafts: Any) -> Any:
        raise ConnectionError("redis away")

    transport.publish = fail  # type: ignore[method-assign]
    ingest = Ingest(Publisher(store, transport))
    answer = await ingest.accept(body([good()]), "application/json")
    assert answer.status == 503 and "nothing was published" in answer.body["message"]


async def test_the_bars_of_ingested_symbols_end_on_time(store: MemoryStore) -> None:
    transport = FakeTransport(store)
    ingest = Ingest(Publisher(store, transport))
    try:
        await ingest.accept(body([good("BARS1")]), "application/json")
        assert ingest.symbols == ["BARS1"]
        await asyncio.sleep(1.1)
        finals = [b for u in transport.bar_updates for b in u.bars if b.final]
        assert any(b.symbol == "BARS1" and b.interval == "1s" for b in finals), "made final by the ingest's timer"
    finally:
        await ingest.close()
