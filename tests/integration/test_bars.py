"""Bars through real hubs, feeds and Redis (PROTOCOL.md: `bars` on subscribe, `bars` frames,
`GET /api/v1/bars`):

- the bars, served and streamed, match a recomputation from the history, for every interval;
- a final bar arrives on time when no tick comes (the feed's timer, not the next tick);
- a throttled subscription gets its bars under its throttle, and every final bar;
- a feed restarted in the middle of a bar continues it from Redis, not from zero;
- the endpoint's errors, and entitlements.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import urllib.parse
from typing import Any

from loadtest.services import Hub, Service
from tests.support.client import Frame, StreamClient, stream
from tests.support.processes import Processes, http_json

INTERVALS = {"1s": 1, "5s": 5, "1m": 60, "5m": 300, "1h": 3600}
NS = 10**9
BAR_FIELDS = ("start", "open", "high", "low", "close", "volume", "count")
JITTER = 0.05  # s: receive-time tolerance of throttle gaps (see test_delivery.py)

Key = tuple[str, str, int]  # symbol, interval, start


def get_bars(hub: Hub, **params: Any) -> tuple[int, Any]:
    return http_json(hub.port, f"/api/v1/bars?{urllib.parse.urlencode(params)}")


def bars_of(hub: Hub, symbol: str, interval: str, limit: int = 10_000) -> list[dict[str, Any]]:
    status, body = get_bars(hub, symbol=symbol, interval=interval, limit=limit)
    assert status == 200, body
    assert body["symbol"] == symbol.upper() and body["interval"] == interval
    return list(body["bars"])


def history_of(hub: Hub, symbol: str) -> list[dict[str, Any]]:
    status, body = http_json(hub.port, f"/api/v1/history?{urllib.parse.urlencode({'symbol': symbol, 'limit': 10000})}")
    assert status == 200, body
    assert body["first_seq"] == 1, "the whole history is kept: the recomputation sees every tick"
    return list(body["ticks"])


def recompute(ticks: list[dict[str, Any]], seconds: int) -> list[tuple[Any, ...]]:
    """(start ns, open, high, low, close, volume, count) per bar, from ticks in seq order."""
    bars: dict[int, list[Any]] = {}
    for tick in ticks:
        second = tick["ts"] // NS
        start = (second - second % seconds) * NS
        bar = bars.get(start)
        if bar is None:
            bars[start] = [start, tick["price"], tick["price"], tick["price"], tick["price"], tick["size"], 1]
        else:
            bar[2], bar[3], bar[4] = max(bar[2], tick["price"]), min(bar[3], tick["price"]), tick["price"]
            bar[5] += tick["size"]
            bar[6] += 1
    return [tuple(b) for _, b in sorted(bars.items())]


def fields(bar: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(bar[f] for f in BAR_FIELDS)


def bar_frames(client: StreamClient, start: int = 0) -> list[tuple[Frame, dict[str, Any]]]:
    """Every bar received from frame `start` on, with its frame."""
    return [(f, b) for f in client.frames[start:] if f.type == "bars" for b in f.message["bars"]]


async def run_to_end(feed: Service) -> None:
    code = await asyncio.to_thread(feed.wait, 30)
    assert code == 0, feed.log()


async def test_bars_match_a_recomputation_from_history_for_every_interval(procs: Processes, prefix: str) -> None:
    symbols = ["BARA", "BARB", "EUR/USD"]
    hub = procs.hub(prefix)
    feed = procs.feed(prefix, symbols, 300, "--ticks", "1500")
    async with stream(hub.ws_url, "msgpack") as binary, stream(hub.ws_url, "json") as text:
        for client in (binary, text):
            ack = await client.subscribe(symbols, bars=list(INTERVALS), snapshot=True)
            assert ack.message["bars"] == list(INTERVALS)
        await run_to_end(feed)
        await asyncio.sleep(0.5)  # the last updates on their way
        for symbol in symbols:
            ticks = history_of(hub, symbol)
            assert len(ticks) > 300
            for interval, seconds in INTERVALS.items():
                want = recompute(ticks, seconds)
                served = bars_of(hub, symbol, interval)
                assert [fields(b) for b in served] == want, f"GET /api/v1/bars {symbol} {interval}"
                assert all(b["final"] for b in served[:-1]), "every bar but the newest has ended"
                assert all(isinstance(b[f], float) for b in served for f in ("open", "volume"))
                for client in (binary, text):
                    streamed: dict[int, dict[str, Any]] = {}
                    for _, bar in bar_frames(client):
                        if bar["symbol"] == symbol and bar["interval"] == interval:
                            streamed[bar["start"]] = bar  # the last version of each bar received
                    assert streamed, f"no {interval} bar of {symbol} streamed"
                    by_start = {w[0]: w for w in want}
                    for start, bar in streamed.items():
                        assert fields(bar) == by_start[start], f"streamed {symbol} {interval} ({client.encoding})"
                    ended = [b for b in served if b["final"]]
                    assert all(streamed[b["start"]]["final"] for b in ended if b["start"] in streamed), (
                        "every ended bar was streamed final"
                    )
        assert bars_of(hub, symbols[0], "1s", limit=2) == bars_of(hub, symbols[0], "1s")[-2:], "limit: the last L"


async def test_a_final_bar_arrives_on_time_without_a_tick(procs: Processes, prefix: str) -> None:
    """A tick every 2 s: each 1s bar must be ended by the feed's timer, a second before the next tick."""
    hub = procs.hub(prefix)
    procs.feed(prefix, ["QUIET"], 0.5)
    async with stream(hub.ws_url, "json") as client:
        await client.subscribe(["QUIET"], bars=["1s"], snapshot=False)
        finals: list[tuple[Frame, dict[str, Any]]] = []
        deadline = time.monotonic() + 12
        while len(finals) < 2:
            assert time.monotonic() < deadline, f"final bars received: {finals}"
            await client.wait_for(lambda f: f.type == "bars", within=6, start=len(client.frames))
            finals = [(f, b) for f, b in bar_frames(client) if b["final"]]
        for frame, bar in finals:
            end = bar["start"] + NS
            late = (frame.wall - end) / NS
            assert 0 <= late < 0.5, f"the bar ended {late:.3f} s before it arrived"
            ticks_since = [
                d for d in client.deliveries("QUIET", start=0) if d.index < frame.index and d.tick["ts"] >= end
            ]
            assert not ticks_since, "it was the timer, not a tick of the next bar"


async def test_throttled_bar_subscriptions(procs: Processes, prefix: str) -> None:
    throttle_ms = 400
    hub = procs.hub(prefix)
    procs.feed(prefix, ["THRA", "THRB"], 200)
    async with stream(hub.ws_url, "msgpack") as client, stream(hub.ws_url, "msgpack") as fast:
        ack = await client.subscribe(["THRA", "THRB"], throttle_ms=throttle_ms, bars=["1s", "5s"], snapshot=False)
        assert ack.message["throttle_ms"] == throttle_ms
        await fast.subscribe(["THRA"], bars=["1s"], snapshot=False)
        listed = await client.request("list")
        assert [s["bars"] for s in listed.message["subscriptions"]] == [["1s", "5s"], ["1s", "5s"]]
        mark = len(client.frames)
        await asyncio.sleep(4.2)
        received = bar_frames(client, mark)
        for symbol in ("THRA", "THRB"):
            times = sorted({f.at for f, b in received if b["symbol"] == symbol})
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert len(gaps) >= 6, f"{symbol}: {len(times)} bar deliveries in 4.2 s"
            assert min(gaps) >= throttle_ms / 1000 - JITTER, f"{symbol}: bars {min(gaps):.3f} s apart"
            mine = [b for _, b in received if b["symbol"] == symbol and b["interval"] == "1s"]
            starts = sorted({b["start"] for b in mine})
            finals = {b["start"] for b in mine if b["final"]}
            assert set(starts[:-1]) <= finals, f"{symbol}: every 1s bar that ended arrived final"
            versions: dict[int, list[tuple[bool, int]]] = {}
            for b in mine:
                versions.setdefault(b["start"], []).append((b["final"], b["count"]))
            assert all(v == sorted(v) for v in versions.values()), "no version older than one sent before"
        fast_frames = [f for f, b in bar_frames(fast) if b["symbol"] == "THRA"]
        assert len({f.index for f in fast_frames}) > 3 * len({f.at for f, b in received if b["symbol"] == "THRA"}), (
            "throttle 0 gets bars as they change: many more frames"
        )
        await client.subscribe(["THRA"], bars=[])
        mark = len(client.frames)
        await asyncio.sleep(1.0)
        assert {b["symbol"] for _, b in bar_frames(client, mark)} == {"THRB"}, "bars: [] stops them"


async def test_a_feed_restarted_mid_bar_continues_the_bar_from_redis(procs: Processes, prefix: str) -> None:
    if time.time() % 3600 > 3600 - 20:  # the hour's bar must not end during the test
        await asyncio.sleep(3600 - time.time() % 3600 + 0.1)
    hub = procs.hub(prefix)
    feed = procs.feed(prefix, ["RESTART"], 50, "--seed", "5")
    async with stream(hub.ws_url, "msgpack") as client:
        await client.subscribe(["RESTART"], bars=["1h"], snapshot=False)
        await client.wait_for(lambda f: f.type == "bars", start=len(client.frames))
        await asyncio.sleep(1.0)
        feed.stop()
        (before,) = bars_of(hub, "RESTART", "1h")
        assert before["count"] > 20 and not before["final"]
        await asyncio.sleep(0.3)  # what the stopped feed published has arrived
        mark = len(client.frames)
        again = procs.feed(prefix, ["RESTART"], 50, "--seed", "6", "--no-opening")
        await client.wait_for(lambda f: f.type == "bars", start=mark)
        after = next(b for _, b in bar_frames(client, mark))
        assert after["start"] == before["start"] and after["open"] == before["open"], "the same bar"
        assert after["count"] > before["count"] and after["volume"] > before["volume"], "continued, not from zero"
        assert after["high"] >= before["high"] and after["low"] <= before["low"]
        again.stop()
        (now,) = bars_of(hub, "RESTART", "1h")
        assert fields(now)[1:] == recompute(history_of(hub, "RESTART"), 3600)[-1][1:], "as if one feed had run"


async def test_the_bars_endpoint_answers_errors_and_entitlements(procs: Processes, prefix: str) -> None:
    hub = procs.hub(prefix, env={"MARKETSTREAM_ANONYMOUS_SYMBOLS": "OPEN*"})
    procs.feed(prefix, ["OPENA", "SHUT"], 100)
    (bar,) = bars_of(hub, "opena", "1h", limit=5)  # upper-cased like the stream's symbols
    assert bar["symbol"] == "OPENA" and bar["interval"] == "1h" and bar["count"] >= 1
    assert set(bar) == {"symbol", "interval", *BAR_FIELDS, "final"}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"symbol": "SHUT", "interval": "1m"}, 403, "forbidden"),
        ({"symbol": "OPENZ", "interval": "1m"}, 404, "unknown_symbol"),
        ({"symbol": "OPENA", "interval": "2m"}, 400, "bad_request"),
        ({"symbol": "OPENA"}, 400, "bad_request"),
        ({"symbol": "OPENA", "interval": "1m", "limit": 0}, 400, "bad_request"),
        ({"symbol": "OPENA", "interval": "1m", "limit": "x"}, 400, "bad_request"),
        ({"symbol": "OPEN A!", "interval": "1m"}, 400, "bad_request"),
    ]
    for params, status, code in cases:
        got, body = get_bars(hub, **params)
        assert (got, body["error"]) == (status, code), (params, body)
    async with stream(hub.ws_url, "json") as client:
        reply = await client.request("subscribe", symbols=["OPENA"], bars=["1d"])
        assert reply.type == "error" and reply.message["code"] == "bad_request"
        assert "1s, 5s, 1m, 5m, 1h" in reply.message["message"]
        ack = await client.subscribe(["OPENA", "SHUT"], bars=["1m"])
        assert ack.message["rejected"] == {"SHUT": "forbidden"}


async def test_bars_on_the_embedded_default(procs: Processes) -> None:
    """No Redis: the in-memory store computes the bars and the server's own feed ends them."""
    hub = procs.hub(None, redis_url=None, env={"MARKETSTREAM_EMBEDDED_FEED_RATE": "200"})
    async with stream(hub.ws_url, "json") as client:
        ack = await client.subscribe(["AAPL"], bars=["1s"])
        assert ack.message["bars"] == ["1s"]
        await client.wait_for(lambda f: f.type == "bars" and any(b["final"] for b in f.message["bars"]), within=5)
    served = bars_of(hub, "AAPL", "1s")
    assert served and all(b["final"] for b in served[:-1]) and served[0]["count"] >= 1
