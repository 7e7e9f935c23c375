"""Feed sources on real hubs and Redis: replay (`runfeed --replay`) and HTTP ingest
(`POST /api/v1/ticks`).

- replay publishes a file's ticks in its order, at its timing divided by the speed asked,
  with the record's time as `src_ts`; the shipped sample replays whole;
- ingest accepts good batches (seq from the same authority as a feed's: a symbol fed by
  both has one gap-free seq), rejects bad ticks one by one with their reasons, refuses
  callers without the publish permission, keeps `src_ts`, and computes bars that end on
  time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feeds.replay import SAMPLE, read_records
from marketstream.client import Client, Tick
from tests.support.keys import Deployment, Response, bearer, deployment, http
from tests.support.processes import Processes, http_json

NS = 1_000_000_000
WAIT = 20.0


# -- replay ------------------------------------------------------------------------------


def write_file(path: Path, start_ns: int, count: int, gap_ms: int) -> list[dict[str, Any]]:
    records = []
    for i in range(count):
        price = 100.0 + i
        records.append(
            {
                "symbol": f"RPL{i % 2}",
                "price": price,
                "size": 1 + i,
                "bid": price - 0.5,
                "ask": price + 0.5,
                "src_ts": start_ns + i * gap_ms * 1_000_000,
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def history(port: int, symbol: str) -> list[dict[str, Any]]:
    status, body = http_json(port, f"/api/v1/history?symbol={symbol.replace('/', '%2F')}&limit=10000")
    assert status == 200, body
    return list(body["ticks"])


def test_replay_reproduces_a_file_in_order_at_the_speed_asked(procs: Processes, prefix: str, tmp_path: Path) -> None:
    records = write_file(tmp_path / "ticks.ndjson", 1_700_000_000 * NS, 40, 50)  # 2 s of ticks, 50 ms apart
    hub = procs.hub(prefix)
    replay = procs.replay(prefix, tmp_path / "ticks.ndjson", "--speed", "2")
    assert replay.wait(30) == 0, replay.log()
    assert "runfeed: published 40 ticks" in replay.log()
    published = sorted(history(hub.port, "RPL0") + history(hub.port, "RPL1"), key=lambda t: t["ts"])
    assert [(t["symbol"], t["price"], t["size"], t["src_ts"]) for t in published] == [
        (r["symbol"], r["price"], r["size"], r["src_ts"]) for r in records
    ], "the file's ticks, in its order, src_ts kept"
    for symbol in ("RPL0", "RPL1"):
        assert [t["seq"] for t in published if t["symbol"] == symbol] == list(range(1, 21))
    first = published[0]
    late = [
        (t["ts"] - first["ts"]) / NS - (t["src_ts"] - first["src_ts"]) / NS / 2 for t in published
    ]  # seconds behind the schedule at speed 2
    span = (published[-1]["ts"] - first["ts"]) / NS
    assert min(late) > -0.005, "never early"
    assert sorted(late)[len(late) // 2] < 0.1, f"mostly on time at speed 2: {sorted(late)}"
    assert 0.97 <= span < 1.5, f"1.95 s of ticks at speed 2 took {span:.3f} s (at speed 1: 1.95 s)"


def test_the_sample_file_replays_whole(procs: Processes, prefix: str) -> None:
    hub = procs.hub(prefix)
    replay = procs.replay(prefix, "sample", "--speed", "0")
    assert replay.wait(60) == 0, replay.log()
    counts: dict[str, int] = {}
    for _, quote in read_records(SAMPLE):
        counts[quote[0]] = counts.get(quote[0], 0) + 1
    for symbol, count in counts.items():
        assert len(history(hub.port, symbol)) == count, symbol


# -- HTTP ingest ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dep(redis_url: str) -> Iterator[Deployment]:
    """A hub that requires keys and a feed of AAPL (60 ticks/s)."""
    with deployment("ingest", redis_url, [{}], ["AAPL"], 60.0) as d:
        yield d


@pytest.fixture(scope="module")
def keys(dep: Deployment) -> dict[str, str]:
    return {
        "publisher": dep.store.create("publisher", "--publish"),
        "reader": dep.store.create("reader"),
    }


def post(dep: Deployment, key: str | None, ticks: Any, content: bytes | None = None) -> Response:
    headers = {"Content-Type": "application/json", **(bearer(key) if key else {})}
    data = content if content is not None else json.dumps({"ticks": ticks}).encode()
    return http(f"{dep.hubs[0].base}/api/v1/ticks", headers, method="POST", data=data)


def tick(symbol: str, price: float, **more: Any) -> dict[str, Any]:
    return {"symbol": symbol, "price": price, "size": 10, "bid": price - 0.01, "ask": price + 0.01, **more}


async def take_ticks(client: Client, symbol: str, count: int) -> list[Tick]:
    got: list[Tick] = []

    async def collect() -> None:
        async for t in client.ticks():
            if t.symbol == symbol:
                got.append(t)
                if len(got) >= count:
                    return

    await asyncio.wait_for(collect(), WAIT)
    return got


async def test_a_good_batch_is_published_and_streamed_with_its_source_times(
    dep: Deployment, keys: dict[str, str]
) -> None:
    first = await asyncio.to_thread(post, dep, keys["publisher"], [tick("inga", 50.0)])
    assert first.status == 200, first.body  # a new symbol enters the catalog
    assert first.json()["ticks"] == [
        {"index": 0, "symbol": "INGA", "seq": 1, "epoch": first.json()["ticks"][0]["epoch"]}
    ]
    async with Client(dep.hubs[0].ws_url, key=keys["reader"]) as client:
        await client.subscribe(["INGA"], snapshot=False)
        batch = [tick("INGA", 50.0 + i, src_ts=1_700_000_000 * NS + i) for i in range(1, 6)]
        answer = await asyncio.to_thread(post, dep, keys["publisher"], batch)
        assert answer.status == 200 and answer.json()["accepted"] == 5 and answer.json()["rejected"] == []
        seqs = [t["seq"] for t in answer.json()["ticks"]]
        assert seqs == [2, 3, 4, 5, 6]
        got = await take_ticks(client, "INGA", 5)
        assert [(t.seq, t.price, t.src_ts) for t in got] == [
            (s, b["price"], b["src_ts"]) for s, b in zip(seqs, batch, strict=True)
        ]


async def test_bad_ticks_are_rejected_one_by_one(dep: Deployment, keys: dict[str, str]) -> None:
    batch = [
        tick("INGB", 10.0),
        tick("INGB", -1.0),
        tick("bad symbol", 1.0),
        {"symbol": "INGB"},
        tick("INGB", 11.0, seq=9),
    ]
    answer = await asyncio.to_thread(post, dep, keys["publisher"], batch)
    assert answer.status == 200 and answer.json()["accepted"] == 1, answer.body
    rejected = answer.json()["rejected"]
    assert [(r["index"], r["code"], r["field"]) for r in rejected] == [
        (1, "bad_field", "price"),
        (2, "bad_symbol", "symbol"),
        (3, "missing_field", "price"),
        (4, "unknown_field", "seq"),
    ]
    assert all(r["message"] for r in rejected)
    none = await asyncio.to_thread(post, dep, keys["publisher"], [tick("INGB", 0.0)])
    assert none.status == 422 and none.json()["accepted"] == 0
    malformed = await asyncio.to_thread(post, dep, keys["publisher"], None, b"{not json")
    assert malformed.status == 400 and malformed.json()["error"] == "bad_request"


async def test_only_keys_that_may_publish_can(dep: Deployment, keys: dict[str, str]) -> None:
    assert (await asyncio.to_thread(post, dep, None, [tick("INGC", 1.0)])).status == 401
    assert (await asyncio.to_thread(post, dep, "ms_" + "x" * 43, [tick("INGC", 1.0)])).status == 401
    refused = await asyncio.to_thread(post, dep, keys["reader"], [tick("INGC", 1.0)])
    assert refused.status == 403 and "publish" in refused.json()["message"]
    assert http(f"{dep.hubs[0].base}/api/v1/ticks", bearer(keys["publisher"])).status == 405, "POST only"


async def test_ingest_and_a_feed_share_one_seq(dep: Deployment, keys: dict[str, str]) -> None:
    async with Client(dep.hubs[0].ws_url, key=keys["reader"]) as client:
        await client.subscribe(["AAPL"])
        answered: list[int] = []
        for i in range(10):
            answer = await asyncio.to_thread(post, dep, keys["publisher"], [tick("AAPL", 1000.0 + i)] * 2)
            assert answer.status == 200, answer.body
            answered += [t["seq"] for t in answer.json()["ticks"]]
            await asyncio.sleep(0.05)
        got = await take_ticks(client, "AAPL", 60)
        while got[-1].seq < answered[-1]:
            got += await take_ticks(client, "AAPL", 10)
    assert all(b.seq == a.seq + 1 for a, b in itertools.pairwise(got)), "one gap-free seq for both publishers"
    ours = {t.seq: t.price for t in got if t.price >= 1000.0}
    assert sorted(ours) == answered and client.stats["AAPL"].gaps == 0


async def test_bars_are_computed_for_ingested_ticks_and_end_on_time(dep: Deployment, keys: dict[str, str]) -> None:
    answer = await asyncio.to_thread(
        post, dep, keys["publisher"], [tick("INGD", 5.0), tick("INGD", 7.0), tick("INGD", 6.0)]
    )
    assert answer.status == 200
    url = f"{dep.hubs[0].base}/api/v1/bars?symbol=INGD&interval=1s&limit=5"
    deadline = time.monotonic() + 5
    while True:
        bars = (await asyncio.to_thread(http, url, bearer(keys["reader"]))).json()["bars"]
        if bars and bars[-1]["final"]:
            break
        assert time.monotonic() < deadline, f"the bar was not made final: {bars}"
        await asyncio.sleep(0.2)
    (bar,) = bars
    assert (bar["open"], bar["high"], bar["low"], bar["close"], bar["count"], bar["volume"]) == (
        5.0,
        7.0,
        5.0,
        6.0,
        3,
        30.0,
    )
