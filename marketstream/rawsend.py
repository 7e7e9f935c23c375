"""uvicorn's sans-I/O WebSocket protocol with a raw-frame send path (`RAW_SEND`).

`RawSendProtocol` is what ``python -m marketstream.serve`` passes as uvicorn's ``ws``.
It adds one ASGI extension, ``scope["extensions"]["marketstream.raw_send"]``, whose
``write(frame)`` writes a frame the hub built (core/writer.py: final, unmasked, binary
or text) with one ``transport.write``: no ASGI message dict, no send coroutine, no
framing in websockets per connection. Everything else stays uvicorn's: the handshake,
control frames (ping/pong, close), the closing handshake and write flow control. The
hub writes raw only when the socket's buffer is empty, and `write` refuses (writes
nothing, returns False) once a close frame was sent or received, after the disconnect,
or while the transport has paused writing; the hub then falls back to the ASGI send.

It also lets go, after the handshake, of what uvicorn keeps but never reads again
(the request and response with their headers), so that an idle connection holds less.

What it relies on in uvicorn (checked by tests/integration/test_rawsend.py for the
pinned range in pyproject.toml): `handle_connect` builds `self.scope` with an
``extensions`` dict before the ASGI task runs, `self.response` is read only by the
``websocket.accept`` send, and `close_sent`, `disconnected`, `writable` (an
`asyncio.Event` cleared by `pause_writing`), `transport` and `conn` (websockets'
`ServerProtocol`) mean what they mean in 0.54.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

from marketstream.core.writer import RAW_SEND

OPEN = State.OPEN


class RawSendProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol offering the `RAW_SEND` extension."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)
        if scope is not None and self.response.status_code == 101:
            scope["extensions"][RAW_SEND] = {"write": self.write_frame}
        self.request = None  # type: ignore[assignment]  # its headers are in the scope

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept":
            self.response = None  # type: ignore[assignment]  # read only by the accept

    def write_frame(self, frame: bytes) -> bool:
        """Write one already-framed frame at once. False (nothing written) when the
        WebSocket is not open for data (a close frame sent or received, the peer gone)
        or the transport paused writing (its buffer is above the high-water mark)."""
        if self.close_sent or self.disconnected or self.conn.state is not OPEN or not self.writable.is_set():
            return False
        self.transport.write(frame)
        return True
