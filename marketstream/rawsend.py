"""uvicorn's sans-I/O WebSocket protocol with a raw-frame send path (`RAW_SEND`).

`RawSendProtocol` is what ``python -m marketstream.serve`` passes as uvicorn's ``ws``.
It adds one ASGI extension, ``scope["extensions"]["marketstream.raw_send"]``, whose
``write(frame)`` writes a frame the hub built (core/writer.py: final, unmasked, binary
or text) with one ``transport.write``: no ASGI message dict, no send coroutine, no
framing in websockets per connection. Everything else stays uvicorn's: the handshake,
control frames (ping/pong, close), the closing handshake and write flow control. The
transport may buffer raw frames up to its high-water mark; `write` refuses (writes
nothing, returns False) once a close frame was sent or received, after the disconnect,
or while the transport has paused writing, and the hub then sends that frame, and the
ones after it, through the ASGI send (which waits for the transport).

It also makes an idle connection smaller (loadtest/idlemem.py, docs/performance.md): after
the handshake it lets go of what uvicorn keeps but never reads again (the request's and
the response's headers: the app has them in its scope), and it replaces uvicorn's
receive queue (an `asyncio.Queue`: three deques, about 2.5 KB) and its `writable` event
(an `asyncio.Event` and its deque) with `Inbox` and `Flag`, which hold a list and a
future only while someone waits.

What it relies on in uvicorn (checked by tests/integration/test_rawsend.py for the
pinned range in pyproject.toml): `handle_connect` builds `self.scope` with an
``extensions`` dict before the ASGI task runs, `self.response` is read only by the
``websocket.accept`` send, and `close_sent`, `disconnected`, `writable` (an
`asyncio.Event` cleared by `pause_writing`), `transport` and `conn` (websockets'
`ServerProtocol`, whose `close_rcvd` and `close_sent` say that the closing handshake
began) mean what they mean in 0.54; `queue` is used through `put_nowait`,
`get` and `empty` only, by one reader (the app's `receive`), and `writable` through
`set`, `clear` and `wait` only.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from marketstream.core.writer import RAW_SEND


class Inbox:
    """What uvicorn's protocol needs of its receive queue (`put_nowait`, `get`, `empty`),
    unbounded like its `asyncio.Queue()`, for one reader at a time."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            if self._waiter is not None:
                raise RuntimeError("Inbox.get: one reader at a time")
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class Flag:
    """What uvicorn's protocol needs of its `writable` event (`set`, `clear`, `wait`,
    `is_set`): an `asyncio.Event` whose waiters' list exists only while someone waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self, value: bool = True) -> None:
        self._set = value
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter
        return True


class RawSendProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol offering the `RAW_SEND` extension."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = self._flag = Flag(True)  # type: ignore[assignment]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)
        if scope is not None and self.response.status_code == 101:
            scope["extensions"][RAW_SEND] = {"write": self.write_frame}
        # websockets' parser keeps the request for the connection's life: its headers
        # are in the scope (and the accept below was computed from them)
        event.headers.clear()
        self.request = None  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept":
            self.response = None  # type: ignore[assignment]  # read only by the accept

    def write_frame(self, frame: bytes) -> bool:
        """Write one already-framed frame at once. False (nothing written) when the
        WebSocket is not open for data (a close frame sent or received, the peer gone)
        or the transport paused writing (its buffer is above the high-water mark)."""
        conn = self.conn
        if self.close_sent or self.disconnected or conn.close_rcvd or conn.close_sent or not self._flag._set:
            return False
        self.transport.write(frame)
        return True
