"""The WebSocket edge: `/ws/v1/stream`, implementing PROTOCOL.md's stream part.

The consumer parses frames into requests, calls the hub, and replies to what fails;
ticks never pass through it. It gets the process's hub from the lifespan state
(`scope["state"]["hub"]`), which hands it a `Connection`: the hub puts ticks into the
connection's outbox, and the hub's flush (or the connection's writer task) sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from typing import Any, cast
from urllib.parse import parse_qs

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from consumers.gate import Credentials, Denied, Gate
from consumers.grants import Grant
from marketstream.core.closes import Close
from marketstream.core.codec import CODEC, CODECS, SUBPROTOCOLS, BadFrame, CodecName, decode_request
from marketstream.core.connection import Connection, Write
from marketstream.core.hub import Hub
from marketstream.core.requests import RateLimiter, RequestError, parse, request_id
from marketstream.core.writer import RAW_SEND

log = logging.getLogger(__name__)

CLOSE_GRACE = 1.0  # seconds for a close frame to be written, then to be answered
HUB_START_TIMEOUT = 5.0  # seconds a handshake waits for a hub whose transport is not reached yet
MAX_REASON_BYTES = 120  # a close frame's reason is at most 123 bytes
# what a handshake ends in (the hub's `stats.handshakes`; marketstream_handshakes_total{outcome})
HANDSHAKE_OUTCOMES = (
    "accepted",
    "refused_encoding",  # 400: unknown ?encoding=
    "refused_credentials",  # 403: missing or bad credential, origin not allowed
    "refused_unavailable",  # 503: the hub cannot reach its channel layer
    "refused_try_again",  # accepted, closed with 1013: the hub is full, or key leases cannot be counted
    "refused_key_limit",  # accepted, closed with 4001: the key's connection limit
)


def negotiate(scope: dict[str, Any]) -> tuple[CodecName, str | None]:
    """Pick the codec: a known subprotocol first, then `?encoding=`, then msgpack.

    Raises ValueError naming the accepted values when `?encoding=` is unknown.
    """
    for offered in scope.get("subprotocols") or []:
        if offered in SUBPROTOCOLS:
            return SUBPROTOCOLS[offered], offered
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    encoding = (query.get("encoding") or ["msgpack"])[0]
    if encoding not in CODECS:
        shown = f" {encoding[:16]!r}" if encoding.isalnum() else ""  # never echo a query string's other parts
        raise ValueError(f"unknown encoding{shown}; expected msgpack or json")
    return encoding, None


class StreamConsumer(AsyncWebsocketConsumer):
    # No channel of its own on the layer: the hub receives ticks for the whole process.
    channel_layer_alias = "__no_layer__"

    hub: Hub
    gate: Gate
    conn: Connection | None = None
    _gone: asyncio.Future[None] | None = None  # made by a close that waits for the disconnect
    _disconnected = False
    _leased: tuple[Grant, str] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' `AsyncConsumer.__call__` without a channel layer and without
        `await_many_dispatch`, which keeps a task and `asyncio.wait`'s futures per
        connection for a single receive: one message at a time, in order, as there."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
                # a turn of the loop between messages, as Channels' loop gives: the replies
                # of this message are written before the next one is handled (a flood's
                # `rate_limited` errors leave before its 1008 close)
                await asyncio.sleep(0)
        except StopConsumer:
            pass

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels >= 4.2 wraps every handler in aclose_old_connections(), a thread hop
        # for database connections that this consumer never uses.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        state = self.scope.get("state", {})
        hub, gate = state.get("hub"), state.get("gate")
        if not isinstance(hub, Hub) or not isinstance(gate, Gate):
            log.error("refusing a connection: no hub in the lifespan state (serve with python -m marketstream.serve)")
            await self._deny(503, "the hub is not running; try again later")
            return
        self.hub, self.gate = hub, gate
        handshakes = hub.stats.handshakes  # by outcome: HANDSHAKE_OUTCOMES
        try:
            codec_name, subprotocol = negotiate(self.scope)
        except ValueError as exc:
            handshakes["refused_encoding"] += 1
            await self._deny(400, str(exc))
            return
        try:
            grant = await gate.admit(Credentials.from_scope(self.scope))
        except Denied as exc:
            handshakes["refused_credentials"] += 1
            await self._deny(403, exc.message)
            return
        try:
            await asyncio.wait_for(hub.start(), HUB_START_TIMEOUT)
        except Exception as exc:
            handshakes["refused_unavailable"] += 1
            log.error("refusing a connection: the hub cannot reach its channel layer: %s", exc)
            await self._deny(503, "the hub cannot reach its channel layer; try again later")
            return
        session = uuid.uuid4().hex[:16]
        refusal = await gate.hold(grant, session)
        if refusal is None:
            self._leased = (grant, session)  # given back by the disconnect if it comes before `attach`
        await self.accept(subprotocol)
        headers = self.scope.get("headers")
        if isinstance(headers, list):  # read by nothing after the handshake; shared by the scope's copies
            headers.clear()
        if refusal is not None:  # PROTOCOL.md: accepted, then closed with the reason
            handshakes["refused_key_limit" if refusal[0] == Close.KEY_OVER_LIMIT else "refused_try_again"] += 1
            self._closer(*refusal)
            return
        handshakes["accepted"] += 1
        self._limit_send_buffer()
        transport = self._transport()
        writable = None
        if transport is not None:
            buffered = transport.get_write_buffer_size
            writable = lambda: buffered() == 0  # noqa: E731
        codec = CODEC[codec_name]
        send = self._send_bytes if codec.binary else self._send_text
        write = self._raw_writer()
        self.conn = hub.connect(codec, send, self._closer, writable, session, grant.limits, grant.entitlement, write)
        gate.attach(grant, self.conn, session)
        self._leased = None
        self.rate = RateLimiter(self.conn.limits.max_requests_per_s)

    async def _deny(self, status: int, text: str) -> None:
        """Refuse the handshake with an HTTP status and a reason people can read."""
        if "websocket.http.response" in self.scope.get("extensions", {}):
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            await self.base_send({"type": "websocket.http.response.start", "status": status, "headers": headers})
            await self.base_send({"type": "websocket.http.response.body", "body": text.encode()})
        else:
            await self.close()

    # straight to the server's send, skipping the consumer's wrapper: these run once per frame
    async def _send_bytes(self, frame: bytes) -> None:
        await self.base_send({"type": "websocket.send", "bytes": frame})

    async def _send_text(self, frame: bytes) -> None:
        await self.base_send({"type": "websocket.send", "text": frame.decode()})

    def _raw_writer(self) -> Write | None:
        """The server's raw-frame writer (`RAW_SEND`, offered by marketstream.serve's
        protocol), unless MARKETSTREAM_RAW_SEND is off; None: frames go through `send`."""
        if not settings.MARKETSTREAM["RAW_SEND"]:
            return None
        offered = self.scope.get("extensions", {}).get(RAW_SEND)
        write = offered.get("write") if isinstance(offered, dict) else None
        return cast(Write, write) if callable(write) else None

    def _transport(self) -> asyncio.Transport | None:
        """The TCP transport under uvicorn's send, where the server exposes it (uvicorn does;
        uvloop's transports are not asyncio.Transport subclasses, hence the duck typing)."""
        transport = getattr(getattr(self.base_send, "__self__", None), "transport", None)
        if transport is None or not hasattr(transport, "abort") or not hasattr(transport, "get_extra_info"):
            return None
        return cast(asyncio.Transport, transport)

    def _limit_send_buffer(self) -> None:
        """Cap the kernel's send buffer so that a client that stops reading is noticed in
        seconds (Linux lets it grow to 4 MiB) and holds little memory."""
        size: int = settings.MARKETSTREAM["SOCKET_SEND_BUFFER"]
        transport = self._transport()
        sock = transport.get_extra_info("socket") if transport is not None and size > 0 else None
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            except OSError as exc:
                log.debug("cannot set SO_SNDBUF: %s", exc)

    def _closer(self, code: Close, reason: str) -> None:
        """The connection's closer (`Connection.close` calls it once). Closing waits for
        the peer, so it runs in a task: this consumer's message loop must stay free to
        take the disconnect that ends the closing handshake."""
        self._closing = asyncio.get_running_loop().create_task(self._close_or_abort(code, reason))

    async def _close_or_abort(self, code: Close, reason: str) -> None:
        """Send a close frame, and drop the TCP connection if the closing handshake is not
        over within CLOSE_GRACE seconds: a client that does not read never answers it,
        and its socket would otherwise linger with full buffers."""
        if self.conn is not None:
            await self.conn.wait_closed()
        with contextlib.suppress(Exception):
            text = reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
            await asyncio.wait_for(self.close(int(code), text), CLOSE_GRACE)
        if self._disconnected:
            return
        with contextlib.suppress(TimeoutError):
            self._gone = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self._gone, CLOSE_GRACE)
            return
        transport = self._transport()
        if transport is not None:
            transport.abort()

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        conn = self.conn
        if conn is None or conn.closed:
            return
        text, data = message.get("text"), message.get("bytes")
        size = len(data) if data is not None else len(text.encode()) if text is not None else 0
        if size > conn.limits.max_message_bytes:
            conn.close(Close.TOO_BIG, f"frame of {size} bytes; max_message_bytes is {conn.limits.max_message_bytes}")
            return
        value: Any = None
        error: str | None = None
        try:
            value = decode_request(text, data)
        except BadFrame as exc:
            error = f"frame does not decode: {exc}"
        if not self.rate.allow(time.monotonic()):
            if self.rate.exhausted:
                conn.close(Close.POLICY_VIOLATION, f"kept on past max_requests_per_s ({self.rate.rate})")
                return
            self._error(request_id(value), "rate_limited", f"more than {self.rate.rate} requests per second")
            return
        if error is not None:
            self._error(None, "bad_request", error)
            return
        try:
            request = parse(value)
        except RequestError as exc:
            self._error(exc.request_id, exc.code, exc.message)
            return
        try:
            await self.hub.handle(conn, request)
        except Exception:
            log.exception("request %s failed", request.op)
            self._error(request.id, "internal_error", "the hub could not complete the request; try again")

    def _error(self, rid: int | str | None, code: str, text: str) -> None:
        """Reply an `error` (PROTOCOL.md), counted by code in the hub's stats."""
        if self.conn is None:
            return
        self.hub.stats.rejected[code] += 1
        message: dict[str, Any] = {"type": "error", "code": code, "message": text}
        if rid is not None:
            message["id"] = rid
        self.conn.reply(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        self._disconnected = True
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        if self.conn is not None:
            self.hub.detach(self.conn)
            await self.gate.release(self.conn)
            await self.conn.wait_closed()
        elif self._leased is not None:
            await self.gate.release_lease(*self._leased)
        raise StopConsumer()
