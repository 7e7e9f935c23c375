"""HTTP beside the stream, the embedded default, and a hub whose Redis goes away and comes back."""

from __future__ import annotations

import asyncio
import re
import signal
import urllib.request

import pytest

from loadtest.services import Service, free_port
from tests.support.client import assert_seq_increasing, stream
from tests.support.processes import REDIS_URL, Processes, catalog, http_get, http_json, wait_healthy


async def test_http_catalog_health_metrics_landing(procs: Processes, prefix: str) -> None:
    symbols = ["AAPL", "EUR/USD"]
    hub = procs.hub(prefix, REDIS_URL)
    feed = procs.feed(prefix, symbols, 100, "--ticks", "50", "--seed", "1", wait=False)
    assert await asyncio.to_thread(feed.wait, 30) == 0, feed.log()

    status, body = http_json(hub.port, "/api/v1/symbols")
    assert status == 200
    entries = {e["symbol"]: e["last"] for e in body["symbols"]}
    assert set(entries) == set(symbols)
    described = {e["symbol"]: (e["name"], e["kind"], e["reference"]) for e in body["symbols"]}
    assert described == {"AAPL": ("Apple Inc.", "equity", 227.5), "EUR/USD": ("Euro / US Dollar", "fx", 1.0845)}
    assert all(e["epoch"] and len(e["epoch"]) == 8 for e in body["symbols"])
    for symbol in symbols:
        last = entries[symbol]
        assert last["symbol"] == symbol and last["seq"] >= 1
        assert {"ts", "price", "size", "bid", "ask"} <= last.keys() and last["bid"] < last["ask"]
    # the catalog's last tick is what a subscriber gets as its snapshot
    async with stream(hub.ws_url, "json") as client:
        ack = await client.subscribe(symbols)
        snapshot = await client.wait_for(lambda f: f.type == "snapshot", start=ack.index)
        assert {t["symbol"]: t for t in snapshot.message["ticks"]} == entries

        status, body = http_json(hub.port, "/healthz")
        assert status == 200 and body["status"] == "ok"

        status, content_type, text = http_get(hub.port, "/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert re.search(r"^marketstream_connections 1(\.0)?$", text, re.MULTILINE), text
        assert "marketstream_ticks_received" in text

    status, content_type, html = http_get(hub.port, "/")
    assert status == 200 and content_type.startswith("text/html")
    assert "marketstream" in html and "/ws/v1/stream" in html


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
async def test_embedded_mode_serves_ticks_alone(procs: Processes, encoding: str) -> None:
    """No REDIS_URL: in-memory layer and the demo feed inside the server (what `make run` starts)."""
    hub = procs.hub(None, redis_url=None, env={"MARKETSTREAM_EMBEDDED_FEED_RATE": "200"})
    names = set(catalog(hub.port))
    assert {"AAPL", "MSFT", "EUR/USD", "BTC/USD"} <= names
    status, body = http_json(hub.port, "/healthz")
    assert status == 200, body
    async with stream(hub.ws_url, encoding) as client:
        ack = await client.subscribe(["aapl", "eur/usd", "btc/usd"])
        assert ack.message["symbols"] == ["AAPL", "EUR/USD", "BTC/USD"]
        for symbol in ("AAPL", "EUR/USD", "BTC/USD"):
            await client.wait_ticks(symbol, 3)
        assert client.of_type("snapshot"), "no snapshot on the embedded default"
        assert_seq_increasing(client.deliveries())
    # the API, health and metrics skip Django's middleware (marketstream.asgi.LeanHandler);
    # pages keep it: SecurityMiddleware's Referrer-Policy marks which stack answered
    for path, middleware in (("/healthz", False), ("/api/v1/symbols", False), ("/metrics", False), ("/", True)):
        status, headers = await asyncio.to_thread(headers_of, hub.port, path)
        assert status == 200, path
        assert headers.get("x-content-type-options") == "nosniff", path
        assert (headers.get("referrer-policy") is not None) is middleware, path


def headers_of(port: int, path: str) -> tuple[int, dict[str, str]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, {name.lower(): value for name, value in response.headers.items()}


async def redis_outage_setup(procs: Processes) -> tuple[int, str, Service]:
    """A private redis-server (one the test may kill) on a free port: its port, URL and process."""
    port = free_port()
    redis_proc = procs.redis_server(port)
    return port, f"redis://127.0.0.1:{port}/0", redis_proc


async def test_redis_going_away_and_coming_back(procs: Processes, prefix: str) -> None:
    port, url, redis_proc = await redis_outage_setup(procs)
    hub = procs.hub(prefix, url)
    procs.feed(prefix, ["AAPL", "MSFT"], 100, "--seed", "1", redis_url=url)
    async with stream(hub.ws_url, "msgpack") as client:
        await client.subscribe(["AAPL", "MSFT"])
        await client.wait_ticks("AAPL", 5)

        redis_proc.kill()
        await asyncio.to_thread(wait_healthy, hub, 30, 503)
        status, body = http_json(hub.port, "/healthz")
        assert status == 503 and body["status"] != "ok", body
        status, body = http_json(hub.port, "/api/v1/symbols")
        assert status == 503 and body["error"] == "unavailable", body
        assert body["message"].startswith("catalog unavailable: ") and len(body["message"]) > 25, body
        # the hub stays up, and open connections still answer
        assert hub.running()
        pong = await client.ping()
        assert pong.message["type"] == "pong"
        listed = await client.request("list")
        assert [s["symbol"] for s in listed.message["subscriptions"]] == ["AAPL", "MSFT"]

        procs.redis_server(port)
        await asyncio.to_thread(wait_healthy, hub, 30, 200)
        assert hub.running()
        pong = await client.ping()
        assert pong.message["type"] == "pong"
        # /healthz says 200 once the hub subscribes again: ticks of the new epoch (this Redis
        # keeps no data) may have come already, after a `reset`
        assert_seq_increasing(client.deliveries(resets=True))


async def test_live_ticks_resume_after_redis_returns(procs: Processes, prefix: str) -> None:
    port, url, redis_proc = await redis_outage_setup(procs)
    hub = procs.hub(prefix, url)
    feed = procs.feed(prefix, ["AAPL", "MSFT"], 100, "--seed", "1", redis_url=url)
    async with stream(hub.ws_url, "json") as client:
        ack = await client.subscribe(["AAPL", "MSFT"])
        await client.wait_ticks("AAPL", 5)
        redis_proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(redis_proc.wait, 10)
        await asyncio.to_thread(wait_healthy, hub, 30, 503)
        procs.redis_server(port)
        await asyncio.to_thread(wait_healthy, hub, 30, 200)
        assert feed.running(), f"the feed died with Redis:\n{feed.log()}"
        mark = len(client.frames)
        # the same connection gets live ticks again. This Redis keeps no data, so the
        # seq of each symbol restarted in a new epoch: a `reset` comes first, and seq
        # goes up (and is accounted for) within each epoch
        await client.wait_ticks("AAPL", 5, start=mark, within=20)
        await client.wait_ticks("MSFT", 5, start=mark, within=5)
        resets = {f.message["symbol"]: f.message["epoch"] for f in client.of_type("reset")}
        assert set(resets) == {"AAPL", "MSFT"}, client.of_type("reset")
        assert all(resets[s] != ack.message["epochs"][s] for s in resets), "a new epoch"
        assert_seq_increasing(client.deliveries(resets=True))


async def test_catalog_comes_back_after_redis_restart(procs: Processes, prefix: str) -> None:
    port, url, redis_proc = await redis_outage_setup(procs)
    hub = procs.hub(prefix, url)
    procs.feed(prefix, ["AAPL", "MSFT"], 100, "--seed", "1", redis_url=url)
    redis_proc.kill()
    await asyncio.to_thread(wait_healthy, hub, 30, 503)
    procs.redis_server(port)
    await asyncio.to_thread(wait_healthy, hub, 30, 200)
    await asyncio.sleep(3.0)  # the feed has published for a while on the new Redis
    async with stream(hub.ws_url, "msgpack") as client:
        ack = await client.subscribe(["AAPL", "MSFT"])
        assert ack.message["symbols"] == ["AAPL", "MSFT"], ack.message
        await client.wait_ticks("AAPL", 3)
    assert set(catalog(hub.port)) == {"AAPL", "MSFT"}
