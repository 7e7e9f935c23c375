"""The raw-frame send path (marketstream/rawsend.py) against the uvicorn that is installed.

`RawSendProtocol` subclasses uvicorn's websockets-sansio protocol and relies on parts of it
that are not a public API. These tests fail loudly when the installed uvicorn is outside the
range pinned in pyproject.toml, or when it changes what the subclass relies on: they serve a
small ASGI app with the class on a real uvicorn and a real client, and check the frames, the
refusals, flow control and the closing handshake. The hub on both paths (raw, and the ASGI
send with MARKETSTREAM_RAW_SEND=false) is checked at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import tomllib
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import connect

from loadtest.services import free_port
from marketstream.core.writer import RAW_SEND, frame
from marketstream.rawsend import RawSendProtocol
from tests.support.client import stream
from tests.support.processes import REDIS_URL, Processes, unique_prefix

ROOT = Path(__file__).resolve().parents[2]


def pinned_range() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The uvicorn range of pyproject.toml's dependencies: (lowest, first excluded)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if d.startswith("uvicorn"))
    low = re.search(r">=([0-9.]+)", spec)
    high = re.search(r"<([0-9.]+)", spec)
    assert low and high, f"uvicorn must be pinned to a range (>=X,<Y) for marketstream/rawsend.py: {spec!r}"
    return tuple(map(int, low.group(1).split("."))), tuple(map(int, high.group(1).split(".")))


def test_the_installed_uvicorn_is_in_the_pinned_range() -> None:
    low, high = pinned_range()
    installed = tuple(int(p) for p in version("uvicorn").split(".")[:3] if p.isdigit())
    assert low <= installed < high, f"uvicorn {version('uvicorn')} is outside {low}..{high}: check rawsend.py"


def test_the_parts_of_uvicorn_it_relies_on_are_there() -> None:
    assert issubclass(RawSendProtocol, WebSocketsSansIOProtocol)
    source = inspect.getsource(WebSocketsSansIOProtocol)
    # handle_connect builds the scope (with an extensions dict) before the ASGI task starts
    connect_src = inspect.getsource(WebSocketsSansIOProtocol.handle_connect)
    assert connect_src.index('"extensions"') < connect_src.index("create_task(self.run_asgi())")
    # the response is read by the accept only; the request by nothing after handle_connect
    send_src = inspect.getsource(WebSocketsSansIOProtocol.send)
    accept = send_src[send_src.index('== "websocket.accept"') : send_src.index('== "websocket.close"')]
    assert source.count("self.response") == connect_src.count("self.response") + accept.count("self.response")
    assert source.count("self.request") == 1
    # flow control: an Event cleared by pause_writing and set by resume_writing and connection_lost
    assert "self.writable.clear()" in inspect.getsource(WebSocketsSansIOProtocol.pause_writing)
    assert "self.writable.set()" in inspect.getsource(WebSocketsSansIOProtocol.resume_writing)
    assert "self.disconnected = True" in inspect.getsource(WebSocketsSansIOProtocol.connection_lost)
    # websockets records the closing handshake's frames in close_rcvd / close_sent
    from websockets.server import ServerProtocol

    sans_io = ServerProtocol()
    assert sans_io.close_rcvd is None and sans_io.close_sent is None
    assert "self.close_rcvd = " in inspect.getsource(type(sans_io).__mro__[1])
    # a close frame sent by the app sets close_sent
    assert "self.close_sent = True" in inspect.getsource(WebSocketsSansIOProtocol.send)


class App:
    """An ASGI app that accepts, writes raw frames and ASGI frames as asked, and keeps
    what the server offered."""

    def __init__(self) -> None:
        self.write: Any = None
        self.protocol: Any = None
        self.results: list[bool] = []
        self.closed = asyncio.Event()
        self.after_close: bool | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        offered = scope["extensions"].get(RAW_SEND)
        await send({"type": "websocket.accept"})
        self.write = offered["write"] if offered else None
        self.protocol = getattr(self.write, "__self__", None)
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.after_close = self.write(frame(b"gone", True)) if self.write else None
                self.closed.set()
                return
            op = message.get("text")
            if op == "raw":  # a raw binary frame, a raw text frame, a big one, then one by ASGI send
                self.results.append(self.write(frame(b"\x01\x02", True)))
                self.results.append(self.write(frame(b'{"a":1}', False)))
                self.results.append(self.write(frame(b"x" * 70_000, True)))
                await send({"type": "websocket.send", "bytes": b"after"})
            elif op == "paused":
                self.protocol.pause_writing()
                self.results.append(self.write(frame(b"no", True)))
                self.protocol.resume_writing()
                self.results.append(self.write(frame(b"yes", True)))
            elif op == "close":
                await send({"type": "websocket.close", "code": 4000})
                self.results.append(self.write(frame(b"late", True)))


@contextlib.asynccontextmanager
async def serving(app: App, ws: Any) -> AsyncIterator[str]:
    """`app` on a real uvicorn with WebSocket protocol `ws`; yields its URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, ws=ws, ws_per_message_deflate=False, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(1000):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield f"ws://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def served() -> AsyncIterator[tuple[App, str]]:
    app = App()
    async with serving(app, RawSendProtocol) as url:
        yield app, url


async def test_raw_frames_arrive_whole_and_in_order_with_asgi_sends(served: tuple[App, str]) -> None:
    app, url = served
    async with connect(url, compression=None, max_size=None) as ws:
        await ws.send("raw")
        got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(4)]
    assert app.results == [True, True, True]
    assert got == [b"\x01\x02", '{"a":1}', b"x" * 70_000, b"after"]


async def test_a_paused_transport_refuses_raw_writes(served: tuple[App, str]) -> None:
    app, url = served
    async with connect(url, compression=None) as ws:
        await ws.send("paused")
        assert await asyncio.wait_for(ws.recv(), 5) == b"yes"
    assert app.results == [False, True]


async def test_no_raw_write_after_the_close_frame(served: tuple[App, str]) -> None:
    app, url = served
    async with connect(url, compression=None) as ws:
        await ws.send("close")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    await asyncio.wait_for(app.closed.wait(), 5)
    assert app.results == [False]


async def test_no_raw_write_after_the_peer_closed(served: tuple[App, str]) -> None:
    app, url = served
    async with connect(url, compression=None) as ws:
        await ws.send("paused")
        await asyncio.wait_for(ws.recv(), 5)
    await asyncio.wait_for(app.closed.wait(), 5)
    assert app.after_close is False


async def test_the_request_and_response_are_let_go_after_the_handshake(served: tuple[App, str]) -> None:
    app, url = served
    async with connect(url, compression=None, additional_headers={"X-Big": "y" * 2000}) as ws:
        await ws.send("paused")
        await asyncio.wait_for(ws.recv(), 5)
        assert app.protocol.request is None and app.protocol.response is None


async def test_plain_uvicorn_offers_no_raw_writer() -> None:
    app = App()
    async with serving(app, "websockets-sansio") as url, connect(url, compression=None) as ws:
        await ws.send("nothing")
        await asyncio.sleep(0.1)
    assert app.protocol is None and app.write is None


@pytest.mark.parametrize("raw", ["true", "false"])
@pytest.mark.parametrize("encoding", ["msgpack", "json"])
async def test_the_hub_streams_on_both_paths(raw: str, encoding: str) -> None:
    """Welcome, subscribe, ack, snapshot and ticks in seq order, with the raw path and
    with the ASGI send (MARKETSTREAM_RAW_SEND=false), in both codecs."""
    prefix = unique_prefix("raw")
    procs = Processes()
    try:
        hub = procs.hub(prefix, REDIS_URL, env={"MARKETSTREAM_RAW_SEND": raw})
        procs.feed(prefix, ["RAW1", "RAW2"], 100)
        async with stream(hub.ws_url, encoding) as client:
            await client.subscribe(["RAW1", "RAW2"])
            ticks = await client.wait_ticks("RAW1", 20)
            assert [t.seq for t in ticks] == sorted(t.seq for t in ticks)
            assert client.of_type("snapshot")
    finally:
        procs.stop_all()
        procs.remove_logs()


def test_frames_are_rfc6455_server_frames() -> None:
    from websockets.frames import Frame
    from websockets.streams import StreamReader

    for payload in (b"", b"a" * 125, b"b" * 126, b"c" * 65535, b"d" * 65536):
        for binary in (True, False):
            reader = StreamReader()
            reader.feed_data(frame(payload, binary))
            parser = Frame.parse(reader.read_exact, mask=False)
            try:
                next(parser)
            except StopIteration as done:
                parsed = done.value
            assert parsed.data == payload and parsed.fin and parsed.opcode.value == (2 if binary else 1)
