"""A client process of the fan-out benchmark: many stream connections on one asyncio loop.

The benchmark's main process starts several of these (multiprocessing, spawn) and drives
them through a pipe with commands, each answered by one reply:

- on start: connect every connection (bounded concurrency), wait for `welcome`, send one
  `subscribe`, wait for its `ack`; then reply ``("ready", {...})``;
- ``("reset", None)``: start the measurement window (zero window counters) -> ``("ok", None)``;
- ``("report", None)``: -> ``("report", counters)``: `Totals.as_dict()` plus ``seconds``
  (window length) and ``cpu_s`` (this process's CPU time in the window);
- ``("final", {symbol: seq})``: -> ``("final", {"checked": n, "stale": m})``: how many
  (connection, symbol) pairs do not end on the given final seq;
- ``("stop", None)``: close every connection -> ``("stopped", None)``, and exit.

The process also exits when the pipe closes (the main process died). SIGINT is
ignored: the main process decides when clients stop.
"""

from __future__ import annotations

import asyncio
import resource
import signal
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, cast

import msgpack
import orjson

from loadtest.asyncws import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    check_response,
    close_frame,
    frame,
    handshake_request,
)
from loadtest.streamcheck import StreamCheck, Totals

SUBSCRIBE_ATTEMPTS = 3  # a subscribe answered by `internal_error` ("try again") is retried


class RetryableError(RuntimeError):
    """An `error` frame that PROTOCOL.md's wording invites to try again (internal_error)."""


@dataclass(frozen=True)
class ClientOptions:
    host: str
    port: int
    path: str = "/ws/v1/stream"
    encoding: str = "msgpack"
    throttle_ms: int = 0
    tolerance_ms: float = 20.0
    key: str = ""
    connect_concurrency: int = 25  # per process; the hub's Redis pool is small (see the report)
    timeout: float = 30.0  # per connection, for connect + welcome + ack


def raise_nofile(wanted: int = 65536) -> int:
    """Raise this process's RLIMIT_NOFILE soft limit towards `wanted` (at most the hard
    limit). Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


class StreamConnection(asyncio.Protocol):
    """One stream connection; checks and counts every frame it receives."""

    def __init__(self, symbols: list[str], options: ClientOptions, totals: Totals) -> None:
        self.symbols = symbols
        self.options = options
        self.totals = totals
        self.check = StreamCheck(totals)
        self.parser = FrameParser()
        headers = [("Authorization", f"Bearer {options.key}")] if options.key else []
        self.request, self.accept = handshake_request(
            options.host, options.port, options.path, [f"marketstream.v1.{options.encoding}"], headers
        )
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.upgraded = False
        loop = self.loop = asyncio.get_running_loop()
        self.welcome: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.ack: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.closing = False
        self.ready = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.transport.write(self.request)

    def send_json(self, message: dict[str, Any]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(OP_TEXT, orjson.dumps(message)))

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(close_frame(1000))
            self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        for future in (self.welcome, self.ack):
            if not future.done():
                future.set_exception(exc)

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4 :]
            self.head = b""
            try:
                check_response(head, self.accept)
            except ConnectionError as exc:
                self._fail(exc)
                self.close()
                return
            self.upgraded = True
            if not data:
                return
        # Arrival times. Wall clock now, for latency: it includes the time this process took
        # for the frames handled before this one (conservative). For throttle gaps, the
        # loop's time: uvloop caches it when the loop wakes up with the readable sockets,
        # so it does not depend on the order in which this process goes through them.
        recv_ns, mono_ns = time.time_ns(), int(self.loop.time() * 1e9)
        totals = self.totals
        try:
            messages = self.parser.feed(data)
        except ConnectionError as exc:
            self._fail(exc)
            self.close()
            return
        for opcode, payload in messages:
            if opcode == OP_BINARY:
                message = msgpack.unpackb(payload, raw=False)
            elif opcode == OP_TEXT:
                message = orjson.loads(payload)
            elif opcode == OP_PING:
                if self.transport is not None:
                    self.transport.write(frame(OP_PONG, payload))
                continue
            elif opcode == OP_CLOSE:
                self._fail(ConnectionError(f"closed by the server: {payload[:2].hex()} {payload[2:]!r}"))
                self.close_by_server()
                continue
            else:
                continue
            totals.frames += 1
            totals.bytes += len(payload)
            kind = message.get("type")
            if kind == "ticks":
                self.check.ticks(message["ticks"], recv_ns, mono_ns)
            elif kind == "snapshot":
                self.check.ticks(message["ticks"], recv_ns, mono_ns, snapshot=True)
            elif kind == "reset":
                self.check.reset(message["symbol"])
            elif kind == "welcome":
                if not self.welcome.done():
                    self.welcome.set_result(message)
            elif kind == "ack":
                self.check.set_throttle(int(message.get("throttle_ms") or 0), self.options.tolerance_ms)
                if not self.ack.done():
                    self.ack.set_result(message)
            elif kind == "error":
                totals.errors += 1
                if message.get("id") == 1 and not self.ack.done():  # our subscribe failed
                    error = RetryableError if message.get("code") == "internal_error" else RuntimeError
                    self.ack.set_exception(error(f"error {message.get('code')}: {message.get('message')}"))

    def close_by_server(self) -> None:
        if not self.closing:
            self.totals.disconnects += 1
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.closing = True
            self.totals.disconnects += 1
        self._fail(exc or ConnectionError("connection closed"))


class ClientProcess:
    """The connections of one process and the command loop (see the module docstring)."""

    def __init__(self, pipe: Connection, specs: list[list[str]], options: ClientOptions) -> None:
        self.pipe = pipe
        self.specs = specs
        self.options = options
        self.totals = Totals()
        self.connections: list[StreamConnection] = []
        self.failed = 0
        self.retries = 0
        self.first_error = ""

    async def open(self, symbols: list[str], gate: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        opts = self.options
        async with gate:
            phase = "connect"
            try:
                async with asyncio.timeout(opts.timeout):
                    _, conn = await loop.create_connection(
                        lambda: StreamConnection(symbols, opts, self.totals), opts.host, opts.port
                    )
                    self.connections.append(conn)
                    phase = "handshake" if not conn.upgraded else "welcome"
                    await conn.welcome
                    phase = "ack"
                    for attempt in range(1, SUBSCRIBE_ATTEMPTS + 1):
                        conn.send_json(
                            {"op": "subscribe", "id": 1, "symbols": symbols, "throttle_ms": opts.throttle_ms}
                        )
                        try:
                            ack = await conn.ack
                            break
                        except RetryableError:
                            if attempt == SUBSCRIBE_ATTEMPTS:
                                raise
                            self.retries += 1
                            conn.ack = loop.create_future()
                            await asyncio.sleep(0.1 * attempt)
                conn.ready = not ack.get("rejected")
                if not conn.ready:
                    raise RuntimeError(f"subscribe rejected: {ack.get('rejected')}")
            except Exception as exc:
                self.failed += 1
                if not self.first_error:
                    self.first_error = f"waiting for {phase}: {type(exc).__name__}: {exc}"

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(self.options.connect_concurrency)
        await asyncio.gather(*(self.open(spec, gate) for spec in self.specs))
        ready = [c for c in self.connections if c.ready]
        subscriptions = Counter(s for c in ready for s in c.symbols)
        ready_report = {
            "connected": len(ready),
            "failed": self.failed,
            "retries": self.retries,
            "first_error": self.first_error,
            "subscriptions": dict(subscriptions),
        }
        self.pipe.send(("ready", ready_report))
        started, cpu_started = time.monotonic(), time.process_time()
        while True:
            try:
                command, arg = await loop.run_in_executor(None, self.pipe.recv)
            except (EOFError, OSError):
                break
            if command == "reset":
                self.totals.reset_window()
                started, cpu_started = time.monotonic(), time.process_time()
                self.pipe.send(("ok", None))
            elif command == "report":
                report = self.totals.as_dict()
                report.update(seconds=time.monotonic() - started, cpu_s=time.process_time() - cpu_started)
                self.pipe.send(("report", report))
            elif command == "final":
                stale = sum(c.check.stale(arg, c.symbols) for c in ready)
                self.pipe.send(("final", {"checked": sum(len(c.symbols) for c in ready), "stale": stale}))
            elif command == "stop":
                break
        for conn in self.connections:
            conn.close()
        await asyncio.sleep(0.1)
        try:
            self.pipe.send(("stopped", None))
        except OSError:
            pass


def run(pipe: Connection, specs: list[list[str]], options: ClientOptions) -> None:
    """Entry point of a client process (multiprocessing target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_nofile()
    client = ClientProcess(pipe, specs, options)
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(client.main())
