"""Replay: a file's quotes in its order, at its timing times the speed, with their time as src_ts."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from pathlib import Path

import pytest

from feeds.publisher import Publisher
from feeds.replay import SAMPLE, ReplayError, ReplaySource, read_records
from feeds.runner import run_source
from feeds.simulated import Quote, TimedQuote
from marketstream.core.store import MemoryStore
from tests.unit.core.fakes import FakeTransport

NS = 1_000_000_000
T0 = 1_764_150_000 * NS


def write_ndjson(path: Path, times: list[int]) -> Path:
    with path.open("w") as f:
        for i, at in enumerate(times):
            symbol = "AAA" if i % 2 == 0 else "BBB"
            f.write(
                json.dumps({"symbol": symbol, "seq": 99, "ts": at, "price": 10 + i, "size": 1, "bid": 9, "ask": 50})
            )
            f.write("\n")
    return path


async def collect(source: ReplaySource) -> list[tuple[float, list[Quote | TimedQuote]]]:
    out = []
    async for batch in source.batches(asyncio.Event()):
        out.append((time.monotonic(), list(batch)))
    return out


async def test_the_file_is_replayed_in_order_at_the_speed_asked(tmp_path: Path) -> None:
    times = [T0 + k * NS // 10 for k in range(9)]  # 0.8 s of records, 100 ms apart
    source = ReplaySource(write_ndjson(tmp_path / "t.ndjson", times), speed=2.0)
    assert source.symbols() == ["AAA", "BBB"]
    start = time.monotonic()
    batches = await collect(source)
    quotes = [q for _, b in batches for q in b]
    assert [q[1] for q in quotes] == [10.0 + i for i in range(9)], "the file's order"
    assert [q[5:] for q in quotes] == [(t,) for t in times], "the record's time kept as src_ts"
    elapsed = batches[-1][0] - start
    assert 0.38 <= elapsed <= 0.7, f"0.8 s of ticks at speed 2 (at speed 1: 0.8 s): {elapsed:.3f} s"


async def test_speed_zero_is_at_once_and_loop_starts_again(tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "t.ndjson", [T0, T0 + 10 * NS])
    quick = await collect(ReplaySource(path, speed=0))
    assert len(quick) == 1 and len(quick[0][1]) == 2
    looping = ReplaySource(path, speed=100.0, loop=True)
    stop = asyncio.Event()
    got: list[Quote | TimedQuote] = []
    async for batch in looping.batches(stop):
        got.extend(batch)
        if len(got) >= 5:
            stop.set()
    assert [q[1] for q in got[:5]] == [10.0, 11.0, 10.0, 11.0, 10.0]
    assert looping.period == pytest.approx(20.0), "span plus one mean gap"


def test_csv_and_gzip_are_read(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("symbol,price,size,bid,ask,src_ts,venue\nAAPL,1.5,10,1.4,1.6,5,X\nmsft,2,1,1.9,2.1,6,Y\n")
    assert list(read_records(csv)) == [(5, ("AAPL", 1.5, 10.0, 1.4, 1.6, 5)), (6, ("MSFT", 2.0, 1.0, 1.9, 2.1, 6))]
    packed = tmp_path / "t.ndjson.gz"
    packed.write_bytes(gzip.compress(write_ndjson(tmp_path / "u.ndjson", [T0]).read_bytes()))
    assert [r[0] for r in read_records(packed)] == [T0]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("t.txt", "", "expected a .csv"),
        ("t.ndjson", "", "no records"),
        ("t.ndjson", '{"symbol": "A", "price": 1, "size": 1, "bid": 1, "ask": 1}\n', ":1: a record needs its time"),
        ("t.ndjson", "\nnot json\n", ":2: not JSON"),
        ("t.csv", "symbol,price,size,bid,ask,ts\nA,x,1,1,1,5\n", ":2: price: expected a number"),
    ],
)
def test_a_bad_file_is_refused_with_its_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ReplayError, match=message):
        ReplaySource(path).symbols()


async def test_the_sample_file_replays_through_the_publisher() -> None:
    store = MemoryStore()
    transport = FakeTransport(store)
    source = ReplaySource(SAMPLE, speed=0)
    count = await run_source(source, Publisher(store, transport), asyncio.Event(), bars=False)
    records = list(read_records(SAMPLE))
    assert count == len(records) >= 500
    published = [t.decode() for batch in transport.published for t in batch]
    assert [(t["symbol"], t["price"], t.get("src_ts")) for t in published] == [(q[0], q[1], q[5]) for _, q in records]
    assert set(source.symbols()) == {"AAPL", "MSFT", "EUR/USD", "BTC/USD"}
