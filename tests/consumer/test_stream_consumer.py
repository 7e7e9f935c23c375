"""The consumer through channels' WebsocketCommunicator, on the in-memory layer (embedded).

The lifespan is not run here: the fixture builds the process's services as the lifespan
does (`Services.build()`), starts the hub, and hands them to the application in the scope's
`state`, as uvicorn does with the lifespan state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgpack
import orjson
import pytest
from channels.testing import WebsocketCommunicator

from feeds.publisher import Publisher
from marketstream import wiring
from marketstream.asgi import application
from marketstream.core.hub import Hub
from marketstream.core.store import MemoryStore
from marketstream.wiring import Services
from tests.unit.core.fakes import FakeTransport

SYMBOLS = ["AAPL", "MSFT", "EUR/USD"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def with_scope(**extra: Any) -> ASGIApp:
    """The application, with `extra` added to each scope (as a server adds `state`)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await application({**scope, **extra}, receive, send)

    return app


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    assert wiring.embedded(), "consumer tests run on the embedded default (no REDIS_URL)"
    built = Services.build()
    assert isinstance(built.store, MemoryStore) and built.feed is not None
    await built.hub.start()  # the hub only: the embedded feed would publish ticks of its own
    yield built
    await built.hub.stop()
    await built.layer.flush()  # the in-memory layer is process-wide: forget this test's channels and groups


@pytest.fixture
def app(services: Services) -> ASGIApp:
    return with_scope(state={"hub": services.hub, "gate": services.gate, "services": services})


@pytest.fixture
async def publisher(services: Services) -> Publisher:
    pub = Publisher(services.store, services.transport)
    await pub.prepare(SYMBOLS)
    return pub


async def connect(
    app: ASGIApp, path: str = "/ws/v1/stream", subprotocols: list[str] | None = None
) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(app, path, subprotocols=subprotocols)
    connected, _subprotocol = await comm.connect()
    assert connected
    return comm


async def receive(comm: WebsocketCommunicator) -> dict[str, Any]:
    message = await comm.receive_output(timeout=2)
    assert message["type"] == "websocket.send", message
    if message.get("bytes") is not None:
        frame: dict[str, Any] = msgpack.unpackb(message["bytes"])
    else:
        frame = orjson.loads(message["text"])
    return frame


async def send(comm: WebsocketCommunicator, request: dict[str, Any]) -> None:
    await comm.send_to(text_data=orjson.dumps(request).decode())


async def test_welcome_in_msgpack_by_default(app: ASGIApp, publisher: Publisher) -> None:
    comm = await connect(app)
    welcome = await receive(comm)
    assert welcome["type"] == "welcome" and welcome["encoding"] == "msgpack" and welcome["protocol"] == 1
    assert set(welcome["limits"]) >= {"max_subscriptions", "max_message_bytes", "max_requests_per_s", "min_throttle_ms"}
    await comm.disconnect()


async def test_subprotocol_json_is_echoed(app: ASGIApp, publisher: Publisher) -> None:
    comm = WebsocketCommunicator(app, "/ws/v1/stream", subprotocols=["other", "marketstream.v1.json"])
    connected, subprotocol = await comm.connect()
    assert connected and subprotocol == "marketstream.v1.json"
    assert (await receive(comm))["encoding"] == "json"
    await comm.disconnect()


async def test_unknown_encoding_is_refused(app: ASGIApp, publisher: Publisher) -> None:
    comm = WebsocketCommunicator(app, "/ws/v1/stream?encoding=xml")
    connected, _ = await comm.connect()
    assert not connected


async def test_subscribe_ack_then_snapshot_then_live_ticks_in_seq_order(app: ASGIApp, publisher: Publisher) -> None:
    (stored,) = await publisher.publish([("AAPL", 1.0, 1.0, 0.9, 1.1)])
    comm = await connect(app, "/ws/v1/stream?encoding=json")
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
        "epochs": {"AAPL": stored.epoch},
    }
    snapshot = await receive(comm)
    assert snapshot["type"] == "snapshot" and [t["symbol"] for t in snapshot["ticks"]] == ["AAPL"]
    first = snapshot["ticks"][0]["seq"]
    assert first == stored.seq
    live = await publisher.publish(
        [("AAPL", 2.0, 1.0, 1.9, 2.1), ("MSFT", 3.0, 1.0, 2.9, 3.1), ("EUR/USD", 1.0, 1, 0.9, 1.1)]
    )
    seen: list[tuple[str, int]] = []
    while len(seen) < 2:
        frame = await receive(comm)
        assert frame["type"] == "ticks"
        seen += [(t["symbol"], t["seq"]) for t in frame["ticks"]]
    assert seen == [("AAPL", first + 1), ("MSFT", live[1].seq)], "EUR/USD is not subscribed"
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()


async def test_list_ping_unsubscribe(app: ASGIApp, publisher: Publisher) -> None:
    comm = await connect(app, "/ws/v1/stream?encoding=json")
    await receive(comm)
    await send(comm, {"op": "subscribe", "id": "s", "symbols": ["MSFT"], "throttle_ms": 500, "snapshot": False})
    assert (await receive(comm))["throttle_ms"] == 500
    await send(comm, {"op": "list", "id": 1})
    assert (await receive(comm)) == {
        "type": "subscriptions",
        "id": 1,
        "subscriptions": [{"symbol": "MSFT", "throttle_ms": 500, "bars": []}],
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


async def test_subscribe_with_since_recovers_then_streams(app: ASGIApp, publisher: Publisher) -> None:
    ticks = await publisher.publish([("AAPL", float(i), 1.0, 0.9, 1.1) for i in range(5)])
    epoch = ticks[0].epoch
    comm = await connect(app, "/ws/v1/stream?encoding=json")
    assert (await receive(comm))["limits"]["max_recovery"] >= 0
    await send(comm, {"op": "subscribe", "id": 1, "symbols": ["AAPL"], "since": {"aapl": {"seq": 2, "epoch": epoch}}})
    ack = await receive(comm)
    assert (ack["type"], ack["epochs"], ack["recovered"]) == ("ack", {"AAPL": epoch}, {"AAPL": True})
    recovered = await receive(comm)
    assert recovered["type"] == "ticks" and [t["seq"] for t in recovered["ticks"]] == [3, 4, 5]
    assert recovered["ticks"] == [t.decode() for t in ticks[2:]]
    (live,) = await publisher.publish([("AAPL", 9.0, 1.0, 8.9, 9.1)])
    frame = await receive(comm)
    assert [(t["seq"], t["price"]) for t in frame["ticks"]] == [(live.seq, 9.0)] == [(6, 9.0)]
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()


async def test_subscribe_with_a_stale_epoch_gets_a_snapshot(app: ASGIApp, publisher: Publisher) -> None:
    await publisher.publish([("MSFT", 1.0, 1.0, 0.9, 1.1)] * 3)
    comm = await connect(app)
    await receive(comm)
    await send(
        comm,
        {
            "op": "subscribe",
            "id": 1,
            "symbols": ["MSFT"],
            "snapshot": False,
            "since": {"MSFT": {"seq": 1, "epoch": "gone"}},
        },
    )
    ack = await receive(comm)
    assert ack["recovered"] == {"MSFT": False}
    snapshot = await receive(comm)
    assert snapshot["type"] == "snapshot" and [t["seq"] for t in snapshot["ticks"]] == [3]
    await comm.disconnect()


async def test_a_bad_since_is_a_bad_request(app: ASGIApp, publisher: Publisher) -> None:
    comm = await connect(app, "/ws/v1/stream?encoding=json")
    await receive(comm)
    await send(comm, {"op": "subscribe", "id": 4, "symbols": ["AAPL"], "since": {"AAPL": "x"}})
    error = await receive(comm)
    assert error == {
        "type": "error",
        "id": 4,
        "code": "bad_request",
        "message": "'since' for AAPL: seq must be an int >= 0, got 'x'",
    }
    await comm.disconnect()


async def test_a_symbol_whose_seq_restarted_is_reset(app: ASGIApp, services: Services, publisher: Publisher) -> None:
    (first,) = await publisher.publish([("AAPL", 1.0, 1.0, 0.9, 1.1)])
    comm = await connect(app, "/ws/v1/stream?encoding=json")
    await receive(comm)
    await send(comm, {"op": "subscribe", "id": 1, "symbols": ["AAPL"], "snapshot": False})
    await receive(comm)
    await publisher.publish([("AAPL", 2.0, 1.0, 1.9, 2.1)])
    assert [t["seq"] for t in (await receive(comm))["ticks"]] == [2]
    assert isinstance(services.store, MemoryStore)
    services.store.forget("AAPL")  # as a Redis that lost its data
    (new,) = await publisher.publish([("AAPL", 3.0, 1.0, 2.9, 3.1)])
    assert new.seq == 1 and new.epoch != first.epoch
    assert await receive(comm) == {"type": "reset", "symbol": "AAPL", "epoch": new.epoch}
    assert [t["seq"] for t in (await receive(comm))["ticks"]] == [1], "accepted: the seq filter restarted"
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
    app: ASGIApp, publisher: Publisher, frame: dict[str, Any], code: str
) -> None:
    comm = await connect(app, "/ws/v1/stream?encoding=json")
    await receive(comm)
    await comm.send_to(**frame)
    error = await receive(comm)
    assert error["type"] == "error" and error["code"] == code and error["message"]
    await send(comm, {"op": "ping", "id": 1})
    assert (await receive(comm))["type"] == "pong"
    await comm.disconnect()


async def test_oversized_frame_closes_with_1009(app: ASGIApp, services: Services, publisher: Publisher) -> None:
    comm = await connect(app)
    await receive(comm)
    await comm.send_to(text_data="x" * (services.hub.limits.max_message_bytes + 1))
    message = await comm.receive_output(timeout=2)
    assert message == {"type": "websocket.close", "code": 1009, "reason": ""} or message.get("code") == 1009
    await comm.disconnect()


async def test_the_connection_is_detached_from_the_hub_on_disconnect(
    app: ASGIApp, services: Services, publisher: Publisher
) -> None:
    comm = await connect(app)
    await receive(comm)
    await send(comm, {"op": "subscribe", "id": 1, "symbols": ["AAPL"], "snapshot": False})
    await receive(comm)
    assert len(services.hub.connections) == 1 and services.hub.routed("AAPL")
    await comm.disconnect()
    assert services.hub.connections == set() and not services.hub.routed("AAPL")


@pytest.mark.parametrize("state", [{}, {"hub": None}, {"hub": "not a hub"}])
async def test_without_a_hub_in_the_state_the_handshake_is_refused(state: dict[str, Any]) -> None:
    comm = WebsocketCommunicator(with_scope(state=state), "/ws/v1/stream")
    connected, _ = await comm.connect()
    assert not connected


async def test_without_lifespan_state_the_handshake_is_refused() -> None:
    comm = WebsocketCommunicator(application, "/ws/v1/stream")
    connected, _ = await comm.connect()
    assert not connected


async def test_without_a_hub_a_server_that_can_answer_http_gets_503() -> None:
    app = with_scope(state={}, extensions={"websocket.http.response": {}})
    comm = WebsocketCommunicator(app, "/ws/v1/stream")
    await comm.send_input({"type": "websocket.connect"})
    start = await comm.receive_output(timeout=1)
    body = await comm.receive_output(timeout=1)
    assert start["type"] == "websocket.http.response.start" and start["status"] == 503
    assert body["type"] == "websocket.http.response.body" and b"not running" in body["body"]


async def test_a_hub_that_cannot_reach_its_transport_refuses_with_503() -> None:
    transport = FakeTransport()
    transport.fail_open = ConnectionError("no channel layer")
    hub = Hub(MemoryStore(), transport)
    app = with_scope(
        state={"hub": hub, "gate": wiring.make_gate(hub, hub.store)}, extensions={"websocket.http.response": {}}
    )
    comm = WebsocketCommunicator(app, "/ws/v1/stream")
    await comm.send_input({"type": "websocket.connect"})
    start = await comm.receive_output(timeout=2)
    await comm.receive_output(timeout=1)
    assert start["type"] == "websocket.http.response.start" and start["status"] == 503
    assert not hub.started
