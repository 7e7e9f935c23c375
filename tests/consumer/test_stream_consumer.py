"""The consumer through channels' WebsocketCommunicator, on the in-memory layer (embedded)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgpack
import orjson
import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from feeds.publisher import Publisher
from marketstream import runtime
from marketstream.asgi import application

SYMBOLS = ["AAPL", "MSFT", "EUR/USD"]


@pytest.fixture
async def publisher() -> AsyncIterator[Publisher]:
    assert runtime.embedded(), "consumer tests run on the embedded default (no REDIS_URL)"
    pub = Publisher(get_channel_layer(), runtime.get_store(), runtime.GROUP_PREFIX)
    await pub.prepare(SYMBOLS)
    yield pub
    hub = runtime.current_hub()
    if hub is not None:
        await hub.stop()


async def connect(path: str = "/ws/v1/stream", subprotocols: list[str] | None = None) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, path, subprotocols=subprotocols)
    connected, _subprotocol = await comm.connect()
    assert connected
    return comm


async def receive(comm: WebsocketCommunicator) -> dict[str, Any]:
    message = await comm.receive_output(timeout=2)
    assert message["type"] == "websocket.send", message
    if message.get("bytes") is not None:
        return msgpack.unpackb(message["bytes"])
    return orjson.loads(message["text"])


async def send(comm: WebsocketCommunicator, request: dict[str, Any]) -> None:
    await comm.send_to(text_data=orjson.dumps(request).decode())


async def test_welcome_in_msgpack_by_default(publisher: Publisher) -> None:
    comm = await connect()
    welcome = await receive(comm)
    assert welcome["type"] == "welcome" and welcome["encoding"] == "msgpack" and welcome["protocol"] == 1
    assert set(welcome["limits"]) >= {"max_subscriptions", "max_message_bytes", "max_requests_per_s", "min_throttle_ms"}
    await comm.disconnect()


async def test_subprotocol_json_is_echoed(publisher: Publisher) -> None:
    comm = WebsocketCommunicator(application, "/ws/v1/stream", subprotocols=["other", "marketstream.v1.json"])
    connected, subprotocol = await comm.connect()
    assert connected and subprotocol == "marketstream.v1.json"
    assert (await receive(comm))["encoding"] == "json"
    await comm.disconnect()


async def test_unknown_encoding_is_refused(publisher: Publisher) -> None:
    comm = WebsocketCommunicator(application, "/ws/v1/stream?encoding=xml")
    connected, _ = await comm.connect()
    assert not connected


async def test_subscribe_ack_then_snapshot_then_live_ticks_in_seq_order(publisher: Publisher) -> None:
    await publisher.publish([("AAPL", 1.0, 1.0, 0.9, 1.1)])
    comm = await connect("/ws/v1/stream?encoding=json")
    await receive(comm)
    await send(comm, {"op": "subscribe", "id": 3, "symbols": ["aapl", "msft", "bad sym", "NOPE"]})
    ack = await receive(comm)
    assert ack == {
        "type": "ack",
        "id": 3,
        "op": "subscribe",
        "symbols": ["AAPL", "MSFT"],
        "throttle_ms": 0,
        "rejected": {"bad sym": "bad_symbol", "NOPE": "unknown_symbol"},
    }
    snapshot = await receive(comm)
    assert snapshot["type"] == "snapshot" and [t["symbol"] for t in snapshot["ticks"]] == ["AAPL"]
    first = snapshot["ticks"][0]["seq"]
    await publisher.publish([("AAPL", 2.0, 1.0, 1.9, 2.1), ("MSFT", 3.0, 1.0, 2.9, 3.1), ("EUR/USD", 1.0, 1, 0.9, 1.1)])
    seen: list[tuple[str, int]] = []
    while len(seen) < 2:
        frame = await receive(comm)
        assert frame["type"] == "ticks"
        seen += [(t["symbol"], t["seq"]) for t in frame["ticks"]]
    assert seen == [("AAPL", first + 1), ("MSFT", publisher.seq["MSFT"])], "EUR/USD is not subscribed"
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()


async def test_list_ping_unsubscribe(publisher: Publisher) -> None:
    comm = await connect("/ws/v1/stream?encoding=json")
    await receive(comm)
    await send(comm, {"op": "subscribe", "id": "s", "symbols": ["MSFT"], "throttle_ms": 500, "snapshot": False})
    assert (await receive(comm))["throttle_ms"] == 500
    await send(comm, {"op": "list", "id": 1})
    assert (await receive(comm)) == {
        "type": "subscriptions",
        "id": 1,
        "subscriptions": [{"symbol": "MSFT", "throttle_ms": 500}],
    }
    await comm.send_to(bytes_data=msgpack.packb({"op": "ping", "id": "p"}))
    pong = await receive(comm)
    assert pong["type"] == "pong" and pong["id"] == "p" and isinstance(pong["server_time"], int)
    await send(comm, {"op": "unsubscribe", "id": 2, "symbols": ["msft"]})
    ack = await receive(comm)
    assert (ack["op"], ack["symbols"], ack["rejected"]) == ("unsubscribe", ["MSFT"], {})
    await publisher.publish([("MSFT", 3.0, 1.0, 2.9, 3.1)])
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"text_data": "[1, 2]"}, "bad_request"),
        ({"text_data": "{not json"}, "bad_request"),
        ({"bytes_data": b"\xc1"}, "bad_request"),
        ({"text_data": '{"op": "fly", "id": 9}'}, "unknown_op"),
        ({"text_data": '{"op": "subscribe", "symbols": [1], "throttle_ms": "x"}'}, "bad_request"),
    ],
)
async def test_bad_requests_get_errors_and_the_connection_stays_open(
    publisher: Publisher, frame: dict[str, Any], code: str
) -> None:
    comm = await connect("/ws/v1/stream?encoding=json")
    await receive(comm)
    await comm.send_to(**frame)
    error = await receive(comm)
    assert error["type"] == "error" and error["code"] == code and error["message"]
    await send(comm, {"op": "ping", "id": 1})
    assert (await receive(comm))["type"] == "pong"
    await comm.disconnect()


async def test_oversized_frame_closes_with_1009(publisher: Publisher) -> None:
    comm = await connect()
    await receive(comm)
    await comm.send_to(text_data="x" * (runtime.config("MAX_MESSAGE_BYTES") + 1))
    message = await comm.receive_output(timeout=2)
    assert message == {"type": "websocket.close", "code": 1009, "reason": ""} or message.get("code") == 1009
