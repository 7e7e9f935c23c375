"""The hub's limits, on a second hub with small limits that shares the module's Redis prefix and feed:
max_subscriptions (limit_exceeded), throttle clamping, max_message_bytes (1009), request rate (1008).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from loadtest.services import Hub
from tests.integration.conftest import Shared
from tests.support.client import stream
from tests.support.processes import REDIS_URL

LIMITS = {
    "MARKETSTREAM_MAX_SUBSCRIPTIONS": "3",
    "MARKETSTREAM_MIN_THROTTLE_MS": "50",
    "MARKETSTREAM_MAX_THROTTLE_MS": "1000",
    "MARKETSTREAM_MAX_REQUESTS_PER_S": "20",
    "MARKETSTREAM_MAX_MESSAGE_BYTES": "4096",
}


@pytest.fixture(scope="module")
def limited(shared: Shared) -> Iterator[Hub]:
    hub = shared.procs.hub(shared.prefix, REDIS_URL, env=LIMITS)
    try:
        yield hub
    finally:
        hub.stop()


async def test_welcome_announces_the_limits(limited: Hub) -> None:
    async with stream(limited.ws_url, "json") as client:
        limits = client.frames[0].message["limits"]
        assert limits["max_subscriptions"] == 3
        assert limits["max_message_bytes"] == 4096
        assert limits["max_requests_per_s"] == 20
        assert limits["min_throttle_ms"] == 50


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
async def test_limit_exceeded(limited: Hub, encoding: str) -> None:
    async with stream(limited.ws_url, encoding) as client:
        ack = await client.subscribe(["AAPL", "MSFT"], snapshot=False)
        assert ack.message["symbols"] == ["AAPL", "MSFT"] and ack.message["rejected"] == {}
        # MSFT is already subscribed (no new room needed), NVDA takes the last place
        ack = await client.subscribe(["msft", "nvda", "tsla"], snapshot=False)
        assert ack.message["symbols"] == ["MSFT", "NVDA"]
        assert ack.message["rejected"] == {"TSLA": "limit_exceeded"}
        ack = await client.subscribe(["tsla", "eur/usd"], snapshot=False)
        assert ack.message["symbols"] == []
        assert ack.message["rejected"] == {"TSLA": "limit_exceeded", "EUR/USD": "limit_exceeded"}
        listed = await client.request("list")
        assert sorted(s["symbol"] for s in listed.message["subscriptions"]) == ["AAPL", "MSFT", "NVDA"]
        # unknown and bad symbols are rejected for what they are, even when full
        ack = await client.subscribe(["NOPE9", "b a d"], snapshot=False)
        assert ack.message["symbols"] == []
        assert ack.message["rejected"] == {"NOPE9": "unknown_symbol", "b a d": "bad_symbol"}
        # room again after an unsubscribe
        await client.unsubscribe(["AAPL"])
        ack = await client.subscribe(["TSLA"], snapshot=False)
        assert ack.message["symbols"] == ["TSLA"] and ack.message["rejected"] == {}
        # no tick of a rejected symbol ever arrives
        await client.wait_ticks("TSLA", 1)
        assert not client.deliveries("EUR/USD")


async def test_limit_exceeded_within_one_long_request(limited: Hub) -> None:
    async with stream(limited.ws_url, "msgpack") as client:
        reply = await client.request("subscribe", symbols=["AAPL", "MSFT", "NVDA", "TSLA", "EUR/USD"], snapshot=False)
        assert reply.message["type"] == "ack", reply.message
        assert reply.message["symbols"] == ["AAPL", "MSFT", "NVDA"]
        assert reply.message["rejected"] == {"TSLA": "limit_exceeded", "EUR/USD": "limit_exceeded"}


@pytest.mark.parametrize(
    ("requested", "effective"),
    [(None, 50), (0, 50), (-5, 50), (10, 50), (50, 50), (300, 300), (1000, 1000), (99_999, 1000)],
)
async def test_throttle_is_clamped(limited: Hub, requested: int | None, effective: int) -> None:
    async with stream(limited.ws_url, "msgpack") as client:
        fields = {} if requested is None else {"throttle_ms": requested}
        ack = await client.subscribe(["BTC/USD"], snapshot=False, **fields)
        assert ack.message["throttle_ms"] == effective
        listed = await client.request("list")
        assert listed.message["subscriptions"] == [{"symbol": "BTC/USD", "throttle_ms": effective, "bars": []}]


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
async def test_oversized_frame_closes_1009_at_the_configured_limit(limited: Hub, encoding: str) -> None:
    async with stream(limited.ws_url, encoding) as client:
        reply = await client.request("ping", pad="x" * 3000)
        assert reply.type == "pong"
        await client.send({"op": "ping", "id": 99, "pad": "x" * 5000})
        assert await client.wait_closed() == 1009
        assert not [f for f in client.frames if f.message.get("id") == 99]


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
async def test_request_flood_is_rate_limited_then_closed_1008(limited: Hub, encoding: str) -> None:
    async with stream(limited.ws_url, encoding) as client:
        started = time.monotonic()
        sent = 0
        try:
            for i in range(400):
                await client.send({"op": "ping", "id": i})
                sent += 1
        except ConnectionClosed:
            pass
        code = await client.wait_closed()
        elapsed = time.monotonic() - started
        assert code == 1008
        pongs = client.of_type("pong")
        errors = client.of_type("error")
        assert errors, "no rate_limited error before the close"
        assert {e.message["code"] for e in errors} == {"rate_limited"}
        # a token bucket of 20/s with a burst of 20: no more pongs than that allows
        assert 1 <= len(pongs) <= 20 + 20 * elapsed + 1, (len(pongs), elapsed)
        # the errors came after the burst was spent, before the close
        assert min(e.index for e in errors) > min(p.index for p in pongs)


async def test_rate_limited_error_echoes_the_id(limited: Hub) -> None:
    async with stream(limited.ws_url, "json") as client:
        for i in range(30):
            await client.send({"op": "ping", "id": f"r{i}"})
        error = await client.wait_for(lambda f: f.type == "error")
        assert error.message["code"] == "rate_limited"
        assert isinstance(error.message.get("id"), str) and error.message["id"].startswith("r")
