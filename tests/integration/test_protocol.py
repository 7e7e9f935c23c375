"""The stream's handshake and requests against a real hub (uvicorn) and feed on the real Redis:
encoding negotiation, welcome, subscribe/unsubscribe/list/ping with id echo, rejections, errors.
"""

from __future__ import annotations

import time
from typing import Any

import msgpack
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.integration.conftest import Shared
from tests.support.client import JSON, MSGPACK, stream

ENCODINGS = ["msgpack", "json"]


@pytest.mark.parametrize(
    ("how", "asked", "expected", "subprotocol"),
    [
        ("subprotocol", "msgpack", "msgpack", MSGPACK),
        ("subprotocol", "json", "json", JSON),
        ("query", "json", "json", None),
        ("query", "msgpack", "msgpack", None),
        ("none", "msgpack", "msgpack", None),
    ],
)
async def test_welcome_and_encoding(shared: Shared, how: str, asked: str, expected: str, subprotocol: str) -> None:
    async with stream(shared.hub.ws_url, asked, how=how) as client:
        assert client.ws.subprotocol == subprotocol
        welcome = client.frames[0]
        assert welcome.binary == (expected == "msgpack")
        message = welcome.message
        assert message["type"] == "welcome"
        assert message["protocol"] == 1
        assert isinstance(message["session"], str) and message["session"]
        assert message["encoding"] == expected
        assert isinstance(message["server_time"], int)
        assert abs(message["server_time"] - time.time_ns()) < 60 * 10**9, "server_time is not ns since the epoch"
        limits = message["limits"]
        assert limits["max_subscriptions"] == 1000
        assert limits["max_message_bytes"] == 65536
        assert limits["max_requests_per_s"] == 50
        assert limits["min_throttle_ms"] == 0
        # a reply proves the codec both ways
        pong = await client.ping()
        assert pong.binary == (expected == "msgpack")


async def test_subprotocol_wins_over_query(shared: Shared) -> None:
    async with connect(f"{shared.hub.ws_url}?encoding=msgpack", subprotocols=[JSON], compression=None) as ws:
        assert ws.subprotocol == JSON
        welcome = await ws.recv()
        assert isinstance(welcome, str)


async def test_unknown_encoding_is_refused_with_400(shared: Shared) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"{shared.hub.ws_url}?encoding=xml", compression=None, open_timeout=15):
            pass
    assert info.value.response.status_code == 400


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_requests_with_id_echo(shared: Shared, encoding: str) -> None:
    async with stream(shared.hub.ws_url, encoding) as client:
        pong = await client.request("ping", id=41)
        assert pong.message["type"] == "pong" and pong.message["id"] == 41
        assert isinstance(pong.message["server_time"], int)
        pong = await client.request("ping", id="p-1")
        assert pong.message["type"] == "pong" and pong.message["id"] == "p-1"

        listed = await client.request("list", id="l-0")
        assert listed.message == {"type": "subscriptions", "id": "l-0", "subscriptions": []}

        ack = await client.request("subscribe", id=7, symbols=["aapl", "EUR/usd"], snapshot=False)
        epochs = ack.message.pop("epochs")
        assert ack.message == {
            "type": "ack",
            "id": 7,
            "op": "subscribe",
            "symbols": ["AAPL", "EUR/USD"],
            "throttle_ms": 0,
            "rejected": {},
        }
        assert set(epochs) == {"AAPL", "EUR/USD"} and all(isinstance(e, str) and e for e in epochs.values())
        ack = await client.request("subscribe", id="s-2", symbols=["msft"], throttle_ms=250, snapshot=False)
        assert ack.message["id"] == "s-2" and ack.message["symbols"] == ["MSFT"] and ack.message["throttle_ms"] == 250

        listed = await client.request("list", id=3)
        assert listed.message["id"] == 3
        assert sorted(listed.message["subscriptions"], key=lambda s: s["symbol"]) == [
            {"symbol": "AAPL", "throttle_ms": 0, "bars": []},
            {"symbol": "EUR/USD", "throttle_ms": 0, "bars": []},
            {"symbol": "MSFT", "throttle_ms": 250, "bars": []},
        ]

        ack = await client.request("unsubscribe", id="u-1", symbols=["aapl", "msft"])
        assert ack.message["type"] == "ack" and ack.message["id"] == "u-1" and ack.message["op"] == "unsubscribe"
        assert ack.message["symbols"] == ["AAPL", "MSFT"]
        assert ack.message["rejected"] == {}
        listed = await client.request("list")
        assert listed.message["subscriptions"] == [{"symbol": "EUR/USD", "throttle_ms": 0, "bars": []}]


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_requests_in_the_other_codec(shared: Shared, encoding: str) -> None:
    """JSON text requests on a msgpack connection and msgpack binary requests on a JSON one."""
    other_binary = encoding == "json"
    async with stream(shared.hub.ws_url, encoding) as client:
        pong = await client.request("ping", id="x", binary=other_binary)
        assert pong.message == {"type": "pong", "id": "x", "server_time": pong.message["server_time"]}
        ack = await client.request("subscribe", id=2, symbols=["btc/usd"], binary=other_binary)
        assert ack.message["type"] == "ack" and ack.message["symbols"] == ["BTC/USD"]
        listed = await client.request("list", id=3, binary=other_binary)
        assert listed.message["subscriptions"] == [{"symbol": "BTC/USD", "throttle_ms": 0, "bars": []}]
        await client.wait_ticks("BTC/USD", 2)
    # the context manager checked that every server frame had the connection's own kind


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_rejected_per_symbol(shared: Shared, encoding: str) -> None:
    async with stream(shared.hub.ws_url, encoding) as client:
        too_long = "A" * 33
        ack = await client.request(
            "subscribe", id=1, symbols=["nvda", "NOPE123", "bad symbol", "", too_long, "ÄPFEL", "TSLA"], snapshot=False
        )
        assert ack.message["type"] == "ack"
        assert ack.message["symbols"] == ["NVDA", "TSLA"]
        assert ack.message["rejected"] == {
            "NOPE123": "unknown_symbol",
            "bad symbol": "bad_symbol",
            "": "bad_symbol",
            too_long: "bad_symbol",
            "ÄPFEL": "bad_symbol",
        }
        listed = await client.request("list")
        assert [s["symbol"] for s in listed.message["subscriptions"]] == ["NVDA", "TSLA"]
        ack = await client.request("unsubscribe", id=2, symbols=["no way!", "nvda"])
        assert ack.message["symbols"] == ["NVDA"]
        assert ack.message["rejected"] == {"no way!": "bad_symbol"}


BAD_REQUESTS: list[tuple[str, Any, str, Any]] = [
    # (case, frame to send (bytes: as is; str: as is; else encoded in the connection's codec), code, echoed id)
    ("array", [1, 2, 3], "bad_request", None),
    ("string", "hello", "bad_request", None),
    ("number", 42, "bad_request", None),
    ("json-garbage", "{not json", "bad_request", None),
    ("msgpack-garbage", b"\xc1\xc1", "bad_request", None),
    ("no-op", {"id": 11}, "bad_request", 11),
    ("op-not-string", {"op": 5, "id": "n"}, "bad_request", "n"),
    ("unknown-op", {"op": "dance", "id": 7}, "unknown_op", 7),
    ("symbols-not-list", {"op": "subscribe", "id": 8, "symbols": "AAPL"}, "bad_request", 8),
    ("unsubscribe-symbols-missing", {"op": "unsubscribe", "id": 9}, "bad_request", 9),
    ("throttle-string", {"op": "subscribe", "id": 10, "symbols": ["AAPL"], "throttle_ms": "fast"}, "bad_request", 10),
    ("throttle-float", {"op": "subscribe", "id": 12, "symbols": ["AAPL"], "throttle_ms": 1.5}, "bad_request", 12),
    ("snapshot-string", {"op": "subscribe", "id": "s", "symbols": ["AAPL"], "snapshot": "yes"}, "bad_request", "s"),
    ("id-list", {"op": "ping", "id": [1]}, "bad_request", None),
]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize(("case", "frame", "code", "request_id"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
async def test_bad_request_keeps_connection_open(
    shared: Shared, encoding: str, case: str, frame: Any, code: str, request_id: Any
) -> None:
    async with stream(shared.hub.ws_url, encoding) as client:
        if case in ("json-garbage", "msgpack-garbage"):
            raw: str | bytes = frame
        elif encoding == "json":
            raw = orjson.dumps(frame).decode()
        else:
            raw = msgpack.packb(frame)
        mark = len(client.frames)
        await client.ws.send(raw)
        error = await client.wait_for(lambda f: f.type == "error", start=mark)
        assert error.message["code"] == code, error.message
        assert isinstance(error.message["message"], str) and error.message["message"]
        if request_id is None:
            assert "id" not in error.message or error.message["id"] is None
        else:
            assert error.message["id"] == request_id
        # nothing else came, and the connection still works
        assert [f.type for f in client.frames[mark:]] == ["error"]
        pong = await client.ping()
        assert pong.message["type"] == "pong"
        assert not client.closed


async def test_frame_at_the_size_limit_is_served(shared: Shared) -> None:
    async with stream(shared.hub.ws_url, "msgpack") as client:
        pad = "x" * (65536 - 200)
        reply = await client.request("ping", id=1, pad=pad)
        assert reply.message["type"] == "pong"


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_oversized_frame_closes_1009(shared: Shared, encoding: str) -> None:
    async with stream(shared.hub.ws_url, encoding) as client:
        await client.send({"op": "ping", "id": 1, "pad": "x" * 70_000})
        code = await client.wait_closed()
        assert code == 1009
        assert not [f for f in client.frames if f.type == "pong"]
