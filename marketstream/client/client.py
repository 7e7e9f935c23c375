"""`Client`: one logical stream that outlives its connections.

The client holds what the caller subscribed to and, per symbol, the last seq and epoch
it received (`accounting.Accounting`). A background task keeps a connection open: when
one ends with a code worth retrying (PROTOCOL.md, "Close codes"), it waits (at once for
1012, else exponential backoff with jitter), connects again and subscribes to
everything again with `since`, so the hub sends every tick missed before the live ones.
Codes that reconnecting cannot fix end the stream with an exception instead.

Received frames become typed events (events.py) in one bounded queue, read by
iterating the client: a caller that stops reading stops the client reading its socket,
and the hub then treats it as a slow client (conflation, then 1013 and a reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from marketstream.client.accounting import Accounting, SymbolStats
from marketstream.client.backoff import Backoff
from marketstream.client.errors import (
    ClientError,
    ConnectionLost,
    Policy,
    Refused,
    RequestError,
    closed_error,
    policy,
    retried_status,
)
from marketstream.client.events import (
    Ack,
    Bar,
    Connected,
    Disconnected,
    Event,
    Reset,
    Tick,
    Unsubscribed,
    Welcome,
)
from marketstream.client.wire import DEFAULT_URL, ENCODINGS, SUBPROTOCOLS, BadFrame, Channel, decode, encode

log = logging.getLogger("marketstream.client")

STABLE_AFTER = 10.0  # seconds a connection must last for the next failure to start the backoff over
MAX_FRAME = 4 * 1024 * 1024  # the hub's frames stay below 1 MiB


@dataclass(frozen=True, slots=True)
class Subscription:
    """One symbol as subscribed: its throttle (the effective one once acked), its bars,
    and whether a snapshot was asked for when nothing is held to recover from."""

    throttle_ms: int = 0
    bars: tuple[str, ...] = ()
    snapshot: bool = True


class Client:
    """A reconnecting market-data stream. Use it as an async context manager:

        async with Client(url, key=KEY) as client:
            await client.subscribe(["AAPL"], throttle_ms=250)
            async for event in client:
                ...

    `encoding`: `msgpack` (binary frames, the default) or `json`. `reconnect=False` ends
    the stream with `ConnectionLost` when a connection ends instead of reconnecting.
    `queue_size`: events held for a caller that reads slowly. `request_timeout`: seconds
    a request waits for its reply.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        key: str | None = None,
        encoding: str = "msgpack",
        reconnect: bool = True,
        backoff: Backoff | None = None,
        queue_size: int = 10_000,
        open_timeout: float = 10.0,
        request_timeout: float = 10.0,
    ) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding: expected one of {', '.join(ENCODINGS)}, got {encoding!r}")
        self.url = url
        self.key = key
        self.encoding = encoding
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.open_timeout = open_timeout
        self.request_timeout = request_timeout
        self.subscriptions: dict[str, Subscription] = {}  # what the client holds, sent again on reconnect
        self.accounting = Accounting()
        self.welcome: Welcome | None = None
        self.connections = 0  # connections opened so far
        self.recovered: dict[str, bool] = {}  # the last reconnect's `recovered`, per symbol
        self._queue_size = queue_size
        self._events: Channel[Event] | None = None
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._resubscribes: set[int] = set()
        self._ids = 0
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> Welcome:
        """Open the first connection; returns the hub's welcome. Raises `Refused` (HTTP
        403: a bad key), `ConnectionLost` (the hub cannot be reached) or a `Closed` at
        once: the first connection is not retried."""
        if self._task is not None:
            raise ClientError("connect() was already called")
        self._events = Channel(self._queue_size)
        ws = await self._open(first=True)
        self._task = asyncio.get_running_loop().create_task(self._run(ws), name="marketstream-client")
        await self._wait_connected()
        assert self.welcome is not None
        return self.welcome

    async def close(self) -> None:
        """Close the connection (1000) and end the stream: iteration stops after the
        events already received."""
        self._closing = True
        ws, task = self._ws, self._task
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._finish(None)

    # -- requests --------------------------------------------------------------------

    async def subscribe(
        self,
        symbols: Iterable[str],
        *,
        throttle_ms: int = 0,
        bars: Iterable[str] | None = None,
        snapshot: bool = True,
    ) -> Ack:
        """Subscribe to `symbols` (upper-cased, as the hub does), at most one tick per
        symbol every `throttle_ms`, with the `bars` intervals given (None: keep the bars
        of symbols already held, none for new ones; `[]`: stop them). Returns the ack;
        symbols in its `rejected` are not held. Subscribing again to a symbol changes it.

        The subscription is kept from the moment of the call: if the connection ends
        before the ack (`ConnectionLost` is raised), it is sent on the next connection.
        """
        names = [s.strip().upper() for s in symbols]
        wanted = tuple(bars) if bars is not None else None
        for name in names:
            held = self.subscriptions.get(name)
            keep = held.bars if held is not None else ()
            self.subscriptions[name] = Subscription(throttle_ms, wanted if wanted is not None else keep, snapshot)
        fields: dict[str, Any] = {"symbols": names, "throttle_ms": throttle_ms, "snapshot": snapshot}
        if wanted is not None:
            fields["bars"] = list(wanted)
        return Ack.from_wire(await self._request("subscribe", fields))

    async def unsubscribe(self, symbols: Iterable[str]) -> Ack:
        """Unsubscribe; after this returns, no tick of these symbols is received."""
        names = [s.strip().upper() for s in symbols]
        for name in names:
            self.subscriptions.pop(name, None)
        return Ack.from_wire(await self._request("unsubscribe", {"symbols": names}))

    async def ping(self) -> int:
        """A `ping` request; the hub's `server_time` (ns) from its `pong`."""
        return int((await self._request("ping", {}))["server_time"])

    # -- events ----------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            try:
                yield await self.next()
            except StopAsyncIteration:
                return

    async def next(self) -> Event:
        """The next event. Raises StopAsyncIteration once the client is closed and every
        event received before was taken, or the error that ended the stream."""
        if self._events is None:
            raise ClientError("not connected: use `async with Client(...)` or `await client.connect()`")
        return await self._events.get()

    async def ticks(self) -> AsyncIterator[Tick]:
        """Only the ticks of the stream (other events are left out)."""
        async for event in self:
            if isinstance(event, Tick):
                yield event

    async def run(
        self,
        on_tick: Callable[[Tick], Awaitable[None] | None] | None = None,
        on_bar: Callable[[Bar], Awaitable[None] | None] | None = None,
        on_event: Callable[[Event], Awaitable[None] | None] | None = None,
    ) -> None:
        """The callback style: call `on_tick` for each tick, `on_bar` for each bar and
        `on_event` for every other event (plain functions or coroutine functions), until
        the stream ends (`close()`, or an error, which is raised)."""
        async for event in self:
            if isinstance(event, Tick):
                callback: Callable[[Any], Awaitable[None] | None] | None = on_tick
            elif isinstance(event, Bar):
                callback = on_bar
            else:
                callback = on_event
            if callback is not None:
                result = callback(event)
                if inspect.isawaitable(result):
                    await result

    @property
    def stats(self) -> dict[str, SymbolStats]:
        """Per symbol: ticks, conflated, lost, missed, resets (accounting.SymbolStats)."""
        return self.accounting.symbols

    # -- the connection loop ---------------------------------------------------------

    async def _open(self, first: bool) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        try:
            return await connect(
                self.url,
                subprotocols=[Subprotocol(SUBPROTOCOLS[self.encoding])],
                additional_headers=headers,
                open_timeout=self.open_timeout,
                close_timeout=5,
                max_size=MAX_FRAME,
                compression=None,
                user_agent_header="marketstream-client",
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if first or not retried_status(status):
                body = (exc.response.body or b"").decode("utf-8", "replace").strip()
                raise Refused(status, body.splitlines()[0] if body else exc.response.reason_phrase) from None
            raise
        except InvalidURI as exc:
            raise ClientError(f"not a WebSocket URL: {exc}") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            if first:
                raise ConnectionLost(f"cannot connect to {self.url}: {type(exc).__name__}: {exc}") from exc
            raise

    async def _run(self, ws: ClientConnection) -> None:
        error: BaseException | None = None
        try:
            while True:
                opened = time.monotonic()
                code, reason = await self._session(ws)
                if self._closing:
                    return
                if policy(code) is Policy.RAISE:
                    raise closed_error(code, reason)
                if not self.reconnect:
                    raise ConnectionLost(f"the connection ended with {code} ({reason}) and reconnect is off")
                if time.monotonic() - opened >= STABLE_AFTER:
                    self.backoff.reset()
                delay = self.backoff.next(at_once=policy(code) is Policy.AT_ONCE)
                log.info("connection closed with %d (%s); reconnecting in %.2f s", code, reason, delay)
                await self._emit(Disconnected(code, reason, delay))
                ws = await self._reopen(delay)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            error = exc
        finally:
            self._finish(error)

    async def _reopen(self, delay: float) -> ClientConnection:
        """Connect again after `delay`, and after backoff delays while that fails."""
        while True:
            await asyncio.sleep(delay)
            try:
                return await self._open(first=False)
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                delay = self.backoff.next()
                log.info("reconnect failed (%s: %s); next attempt in %.2f s", type(exc).__name__, exc, delay)

    async def _session(self, ws: ClientConnection) -> tuple[int, str]:
        """Serve one connection until it ends; its close code and reason."""
        self._ws = ws
        try:
            welcome = Welcome.from_wire(decode(await asyncio.wait_for(ws.recv(), self.open_timeout)))
            self.welcome = welcome
            await self._emit(Connected(welcome, self.connections))
            self.connections += 1
            await self._resubscribe(ws)
            self._connected.set()
            async for data in ws:
                await self._dispatch(decode(data))
        except ConnectionClosed:
            pass
        except (TimeoutError, BadFrame) as exc:
            log.warning("bad connection (%s); closing it", exc)
            with contextlib.suppress(Exception):
                await ws.close(1002, "bad frame")
            return 1006, str(exc)
        finally:
            self._connected.clear()
            self._ws = None
            self._fail_pending(ConnectionLost("the connection ended before the reply came"))
        received = ws.protocol.close_rcvd
        return (received.code, received.reason) if received is not None else (1006, "no close frame")

    async def _resubscribe(self, ws: ClientConnection) -> None:
        """Send every subscription held: one subscribe per throttle and bars, with
        `since` for the symbols that have ticks."""
        groups: dict[tuple[int, tuple[str, ...], bool], list[str]] = {}
        for symbol, sub in self.subscriptions.items():
            groups.setdefault((sub.throttle_ms, sub.bars, sub.snapshot), []).append(symbol)
        self.recovered = {}
        for (throttle, bars, snapshot), symbols in groups.items():
            request: dict[str, Any] = {"op": "subscribe", "id": self._next_id(), "symbols": symbols}
            request.update(throttle_ms=throttle, snapshot=snapshot, bars=list(bars))
            since = self.accounting.since(symbols)
            if since:
                request["since"] = since
            self._resubscribes.add(request["id"])
            await ws.send(encode(request, self.encoding))

    async def _dispatch(self, m: dict[str, Any]) -> None:
        kind = m["type"]
        if kind == "ticks" or kind == "snapshot":
            account, snapshot = self.accounting.tick, kind == "snapshot"
            for raw in m.get("ticks", ()):
                tick = account(raw, snapshot)
                if tick is not None:
                    await self._emit(tick)
        elif kind == "bars":
            for raw in m.get("bars", ()):
                await self._emit(Bar.from_wire(raw))
        elif kind in ("ack", "subscriptions", "pong", "error"):
            await self._reply(m)
        elif kind == "reset":
            symbol, epoch = str(m["symbol"]), str(m["epoch"])
            self.accounting.reset(symbol, epoch)
            await self._emit(Reset(symbol, epoch))
        elif kind == "unsubscribed":
            symbols = tuple(str(s) for s in m.get("symbols", ()))
            for symbol in symbols:
                self.subscriptions.pop(symbol, None)
            self.accounting.unsubscribed(symbols)
            log.warning("the hub ended the subscriptions of %s: %s", ", ".join(symbols), m.get("reason"))
            await self._emit(Unsubscribed(symbols, str(m.get("reason", ""))))

    async def _reply(self, m: dict[str, Any]) -> None:
        rid = m.get("id")
        if m["type"] == "ack":
            ack = Ack.from_wire(m)
            for symbol in self.accounting.epochs(ack.epochs):
                await self._emit(Reset(symbol, ack.epochs[symbol]))
            if ack.op == "subscribe":
                self.accounting.recovered(ack.recovered)
                for symbol in ack.rejected:
                    self.subscriptions.pop(symbol.strip().upper(), None)
                for symbol in ack.symbols:
                    held = self.subscriptions.get(symbol)
                    if held is not None and ack.throttle_ms is not None and held.throttle_ms != ack.throttle_ms:
                        self.subscriptions[symbol] = Subscription(ack.throttle_ms, held.bars, held.snapshot)
            elif ack.op == "unsubscribe":
                self.accounting.unsubscribed(ack.symbols)
            if isinstance(rid, int) and rid in self._resubscribes:
                self._resubscribes.discard(rid)
                self.recovered.update(ack.recovered)
                refused = [s for s, ok in ack.recovered.items() if not ok]
                if refused:
                    log.info("recovery refused for %s: snapshots instead", ", ".join(refused))
                return
        elif m["type"] == "error" and rid is None:
            log.warning("the hub reported an error: %s: %s", m.get("code"), m.get("message"))
        future = self._pending.pop(rid, None) if isinstance(rid, int) else None
        if future is not None and not future.done():
            if m["type"] == "error":
                future.set_exception(RequestError(str(m.get("code")), str(m.get("message"))))
            else:
                future.set_result(m)

    # -- helpers ---------------------------------------------------------------------

    async def _request(self, op: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        await self._wait_connected()
        ws = self._ws
        if ws is None:
            raise ConnectionLost("not connected")
        rid = self._next_id()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            await ws.send(encode({"op": op, "id": rid, **fields}, self.encoding))
        except ConnectionClosed:
            self._pending.pop(rid, None)
            raise ConnectionLost("the connection ended before the request was sent") from None
        try:
            return await asyncio.wait_for(future, self.request_timeout)
        finally:
            self._pending.pop(rid, None)

    async def _wait_connected(self) -> None:
        """Wait for a connection that is ready for requests; raise what ended the stream."""
        while not self._connected.is_set():
            if self._error is not None:
                raise self._error
            if self._events is None or self._events.ended:
                raise ConnectionLost("the client is closed")
            waiter = asyncio.ensure_future(self._connected.wait())
            done = asyncio.ensure_future(self._ended())
            try:
                await asyncio.wait([waiter, done], timeout=self.request_timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                done.cancel()
            if not self._connected.is_set() and not done.done() and self._error is None:
                raise ConnectionLost(f"not connected within {self.request_timeout} s")

    async def _ended(self) -> None:
        task = self._task
        if task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(task)

    async def _emit(self, event: Event) -> None:
        assert self._events is not None
        await self._events.put(event)

    def _finish(self, error: BaseException | None) -> None:
        if error is not None and self._error is None:
            self._error = error
        self._connected.clear()
        self._fail_pending(error or ConnectionLost("the client is closed"))
        if self._events is not None:
            self._events.end(error)

    def _fail_pending(self, error: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids
