"""A minimal WebSocket client for asyncio protocols (RFC 6455), cheap per frame.

The fan-out benchmark keeps thousands of connections in few processes on the same
machine as the hub, so the generator's cost per frame must stay far below the hub's.
A full client library parses each frame through several layers of Python; this module
does the handshake and frame parsing by hand: a few slices and comparisons per frame.

Scope: client side only; no extensions (the hub serves without permessage-deflate);
fragmented messages are reassembled; control frames are returned to the caller, who
answers pings (`frame(OP_PONG, payload)`) and close frames.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeError(ConnectionError):
    """The server did not upgrade the connection as RFC 6455 requires."""


class ProtocolError(ConnectionError):
    """The server sent a frame that breaks RFC 6455 (e.g. masked, or a bad continuation)."""


def handshake_request(
    host: str, port: int, path: str, subprotocols: Sequence[str] = (), headers: Sequence[tuple[str, str]] = ()
) -> tuple[bytes, bytes]:
    """The HTTP upgrade request, and the Sec-WebSocket-Accept value the server must answer."""
    key = base64.b64encode(os.urandom(16))
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocols:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), accept


def check_response(head: bytes, accept: bytes) -> str | None:
    """Validate the server's response head (up to the blank line). Returns the chosen
    subprotocol, if any; raises HandshakeError naming what was expected and what came."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "101":
        raise HandshakeError(f"expected HTTP 101 Switching Protocols, got {lines[0]!r}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    if fields.get("sec-websocket-accept", "").encode() != accept:
        raise HandshakeError(f"bad Sec-WebSocket-Accept {fields.get('sec-websocket-accept')!r}")
    return fields.get("sec-websocket-protocol")


def frame(opcode: int, payload: bytes) -> bytes:
    """A complete, masked client frame (client frames must be masked; RFC 6455 5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 0x10000:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    if n:
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        payload = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
    return header + mask + payload


def close_frame(code: int = 1000) -> bytes:
    return frame(OP_CLOSE, code.to_bytes(2, "big"))


class FrameParser:
    """Incremental parser of server frames. `feed(data)` returns the complete messages
    as (opcode, payload): data messages reassembled from fragments, control frames as is.
    """

    __slots__ = ("_buf", "_frag_op", "_frags")

    def __init__(self) -> None:
        self._buf = b""
        self._frag_op = 0
        self._frags: list[bytes] = []

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf + data if self._buf else data
        out: list[tuple[int, bytes]] = []
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b1 & 0x80:
                raise ProtocolError("the server sent a masked frame")
            length = b1
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > n:
                break
            payload = buf[start:end]
            pos = end
            opcode = b0 & 0x0F
            if b0 & 0x80:  # FIN
                if opcode == OP_CONT:
                    if not self._frag_op:
                        raise ProtocolError("continuation frame without a message to continue")
                    self._frags.append(payload)
                    out.append((self._frag_op, b"".join(self._frags)))
                    self._frag_op, self._frags = 0, []
                else:
                    out.append((opcode, payload))
            elif opcode == OP_CONT:
                if not self._frag_op:
                    raise ProtocolError("continuation frame without a message to continue")
                self._frags.append(payload)
            else:
                self._frag_op, self._frags = opcode, [payload]
        self._buf = buf[pos:] if pos < n else b""
        return out
