"""The WebSocket edge: `/ws/v1/stream`, implementing PROTOCOL.md's stream part.

The consumer handles requests; ticks never pass through it. It registers a
`Connection` with the process's hub, which puts ticks straight into the
connection's outbox, and the hub's flush (or the connection's writer task) sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
import uuid
from typing import Any, cast
from urllib.parse import parse_qs

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from consumers import closes
from consumers.requests import (
    MAX_SYMBOLS_PER_REQUEST,
    RateLimiter,
    Request,
    RequestError,
    effective_throttle,
    parse,
    request_id,
)
from marketstream import runtime
from marketstream.codec import CODEC, CODECS, SUBPROTOCOLS, BadFrame, CodecName, decode_request
from marketstream.connection import Connection
from marketstream.hub import Hub
from marketstream.symbols import normalize
from marketstream.tick import EncodedTick, now_ns

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
CLOSE_GRACE = 1.0  # seconds for a slow client's close frame to be written, then to be answered
STORE_TIMEOUT = 5.0  # seconds a request waits for Redis (catalog, group join, snapshots)


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
        raise ValueError(f"unknown encoding {encoding[:32]!r}; expected msgpack or json")
    return encoding, None


def normalized(raws: list[Any]) -> tuple[list[str], dict[str, str]]:
    """The valid symbols of a request, upper-cased, each once, in order; and the invalid
    ones as `rejected` entries (`bad_symbol`)."""
    symbols: dict[str, None] = {}
    rejected: dict[str, str] = {}
    for raw in raws:
        symbol = normalize(raw)
        if symbol is None:
            rejected[str(raw)[:64]] = "bad_symbol"
        else:
            symbols[symbol] = None
    return list(symbols), rejected


@functools.cache
def limits() -> dict[str, int]:
    """The limits announced in `welcome` and enforced per connection (one dict, shared)."""
    return {
        "max_subscriptions": runtime.config("MAX_SUBSCRIPTIONS"),
        "max_message_bytes": runtime.config("MAX_MESSAGE_BYTES"),
        "max_requests_per_s": runtime.config("MAX_REQUESTS_PER_S"),
        "min_throttle_ms": runtime.config("MIN_THROTTLE_MS"),
        "max_throttle_ms": runtime.config("MAX_THROTTLE_MS"),
    }


class StreamConsumer(AsyncWebsocketConsumer):
    # No channel of its own on the layer: the hub receives ticks for the whole process.
    channel_layer_alias = "__no_layer__"

    hub: Hub
    conn: Connection

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels >= 4.2 wraps every handler in aclose_old_connections(), a thread hop
        # for database connections that this consumer never uses.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        self._gone: asyncio.Future[None] | None = None  # made by a close that waits for the disconnect
        self._disconnected = False
        try:
            codec_name, subprotocol = negotiate(self.scope)
        except ValueError as exc:
            await self._deny(400, str(exc))
            return
        self.limits = limits()
        self.rate = RateLimiter(self.limits["max_requests_per_s"])
        try:
            self.hub = await asyncio.wait_for(runtime.get_hub(), 5.0)
        except Exception as exc:
            log.error("refusing a connection: the hub cannot reach its channel layer: %s", exc)
            await self._deny(503, "the hub cannot reach its channel layer; try again later")
            return
        self.store = self.hub.store
        session = uuid.uuid4().hex[:16]
        self.conn = Connection(
            CODEC[codec_name],
            self._send_frame,
            runtime.config("MAX_PENDING"),
            session,
            self._kill,
            clock=self.hub.clock,
        )
        await self.accept(subprotocol)
        self._limit_send_buffer()
        transport = self._transport()
        if transport is not None:
            buffered = transport.get_write_buffer_size
            self.conn.writable = lambda: buffered() == 0
        self.hub.attach(self.conn)
        self.conn.reply(
            {
                "type": "welcome",
                "protocol": PROTOCOL_VERSION,
                "session": session,
                "encoding": codec_name,
                "server_time": now_ns(),
                "limits": self.limits,
            }
        )
        self.conn.start()

    async def _deny(self, status: int, text: str) -> None:
        """Refuse the handshake with an HTTP status and a reason people can read."""
        if "websocket.http.response" in self.scope.get("extensions", {}):
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            await self.base_send({"type": "websocket.http.response.start", "status": status, "headers": headers})
            await self.base_send({"type": "websocket.http.response.body", "body": text.encode()})
        else:
            await self.close()

    async def _send_frame(self, frame: bytes) -> None:
        # straight to the server's send: this runs once per frame
        if self.conn.codec.binary:
            await self.base_send({"type": "websocket.send", "bytes": frame})
        else:
            await self.base_send({"type": "websocket.send", "text": frame.decode()})

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
        size = runtime.config("SOCKET_SEND_BUFFER")
        transport = self._transport()
        sock = transport.get_extra_info("socket") if transport is not None and size > 0 else None
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            except OSError as exc:
                log.debug("cannot set SO_SNDBUF: %s", exc)

    def _kill(self, code: int) -> None:
        """Close from outside the writer (slow client, code 1013): see `_close_or_abort`."""
        if code == closes.TRY_AGAIN_LATER:
            self.hub.slow_closes += 1
        self._closer = asyncio.get_running_loop().create_task(self._close_or_abort(code))

    async def _close_or_abort(self, code: int) -> None:
        """Send a close frame, and drop the TCP connection if the closing handshake is not
        over within CLOSE_GRACE seconds: a client that does not read never answers it,
        and its socket would otherwise linger with full buffers."""
        await self.conn.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.close(code), CLOSE_GRACE)
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
        if self.conn.closed:
            return
        text, data = message.get("text"), message.get("bytes")
        size = len(data) if data is not None else len(text.encode()) if text is not None else 0
        if size > self.limits["max_message_bytes"]:
            await self._close(closes.TOO_BIG)
            return
        value: Any = None
        error: str | None = None
        try:
            value = decode_request(text, data)
        except BadFrame as exc:
            error = f"frame does not decode: {exc}"
        if not self.rate.allow(time.monotonic()):
            if self.rate.exhausted:
                await self._close(closes.POLICY_VIOLATION)
                return
            self._error(request_id(value), "rate_limited", f"more than {self.rate.rate} requests per second")
            return
        if error is not None:
            self._error(None, "bad_request", error)
            return
        try:
            request = parse(value, MAX_SYMBOLS_PER_REQUEST)
        except RequestError as exc:
            self._error(exc.request_id, exc.code, exc.message)
            return
        try:
            await self.handle(request)
        except Exception:
            log.exception("request %s failed", request.op)
            self._error(request.id, "internal_error", "the hub could not complete the request; try again")

    async def _close(self, code: int) -> None:
        """Close with `code` (1008, 1009) without blocking this consumer's message loop,
        which must stay free to take the disconnect that ends the closing handshake."""
        self.conn.closed = True
        self._closer = asyncio.get_running_loop().create_task(self._close_or_abort(code))

    def _error(self, request_id: int | str | None, code: str, text: str) -> None:
        message: dict[str, Any] = {"type": "error", "code": code, "message": text}
        if request_id is not None:
            message["id"] = request_id
        self.conn.reply(message)

    async def handle(self, request: Request) -> None:
        conn = self.conn
        if request.op == "ping":
            conn.reply({"type": "pong", "id": request.id, "server_time": now_ns()})
        elif request.op == "list":
            subs = [{"symbol": s, "throttle_ms": t} for s, t in sorted(conn.subscriptions.items())]
            conn.reply({"type": "subscriptions", "id": request.id, "subscriptions": subs})
        elif request.op == "subscribe":
            await self.subscribe(request)
        else:
            self.unsubscribe(request)

    async def subscribe(self, request: Request) -> None:
        conn, hub = self.conn, self.hub
        wanted, rejected = normalized(request.symbols)
        known = await asyncio.wait_for(self.store.known(wanted), STORE_TIMEOUT)
        candidates = [s for s, ok in zip(wanted, known, strict=True) if ok]
        rejected.update({s: "unknown_symbol" for s, ok in zip(wanted, known, strict=True) if not ok})
        room = self.limits["max_subscriptions"] - len(conn.subscriptions)
        accepted: list[str] = []
        for symbol in candidates:
            if symbol in conn.subscriptions:
                accepted.append(symbol)
            elif room > 0:
                accepted.append(symbol)
                room -= 1
            else:
                rejected[symbol] = "limit_exceeded"
        throttle = effective_throttle(
            request.throttle_ms, self.limits["min_throttle_ms"], self.limits["max_throttle_ms"]
        )
        fresh = [s for s in accepted if s not in conn.subscriptions]
        conn.held += 1  # ticks wait behind the ack and the snapshot
        try:
            try:
                await asyncio.wait_for(hub.join(hub.add(conn, accepted, throttle)), STORE_TIMEOUT)
            except BaseException:
                # not received by this process: drop them, and what arrived for them meanwhile
                conn.outbox.discard(hub.remove(conn, fresh))
                raise
            conn.reply(
                {
                    "type": "ack",
                    "id": request.id,
                    "op": "subscribe",
                    "symbols": accepted,
                    "throttle_ms": throttle,
                    "rejected": rejected,
                }
            )
            if request.snapshot and fresh:
                self._queue_snapshot(await self._snapshots(fresh), throttle)
        finally:
            conn.held -= 1
            conn.wake()

    async def _snapshots(self, symbols: list[str]) -> list[EncodedTick]:
        """The stored snapshots of `symbols`, in their order; none if the store fails
        (the ack is already queued: the live ticks follow, with their seq)."""
        try:
            found = await asyncio.wait_for(self.store.snapshots(symbols), STORE_TIMEOUT)
        except Exception:
            log.exception("snapshot read failed; subscribing without a snapshot")
            return []
        return [found[s] for s in symbols if s in found]

    def _queue_snapshot(self, stored: list[EncodedTick], throttle: int) -> None:
        conn = self.conn
        ticks = conn.outbox.accept_snapshot(stored)
        if not ticks:
            return
        if throttle:
            now = self.hub.clock()
            conn.sent_at.update((t.symbol, now) for t in ticks)
        conn.outbox.add_control(conn.codec.ticks(ticks, "snapshot"))

    def unsubscribe(self, request: Request) -> None:
        conn = self.conn
        symbols, rejected = normalized(request.symbols)
        removed = self.hub.remove(conn, symbols)
        conn.outbox.discard(removed)
        conn.reply({"type": "ack", "id": request.id, "op": "unsubscribe", "symbols": symbols, "rejected": rejected})

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        self._disconnected = True
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        conn = getattr(self, "conn", None)
        if conn is not None:
            self.hub.detach(conn)
            await conn.stop()
        raise StopConsumer()
