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
- ``("storm", detail)``: -> ``("storm", counters)``: what the reconnects did so far
  (`ClientProcess.storm_report`; with `detail`, each client's close, ack and live times);
- ``("stop", None)``: close every connection -> ``("stopped", None)``, and exit.

With `ClientOptions.reconnect` (the recovery scenario), a client whose connection the
server closes (1012, 1011, 1013) or loses reconnects with exponential backoff and full
jitter, and resubscribes with `since`: its last seq of each symbol, with the epoch of its
last ack (or `reset`). Its checks carry over, so `lost` spans the reconnect. The frames
that follow the ack and continue a recovered symbol from `since` are its *recovered
frames* (`recovery_frame`); the first other `ticks` frame makes the client live again.

The process also exits when the pipe closes (the main process died). SIGINT is
ignored: the main process decides when clients stop.
"""

from __future__ import annotations

import asyncio
import random
import resource
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
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
RECOVERY_FRAME_TICKS = 2000  # the hub's most ticks in one recovered frame (core/hub.py FRAME_TICKS)
NO_RECONNECT = (1000, 1008, 1009, 4001, 4003)  # close codes after which a client does not come back (PROTOCOL.md)


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
    reconnect: bool = False  # reconnect after a close by the server, with `since` (recovery scenario)
    backoff_s: float = 0.1  # reconnect delay: uniform(0, min(backoff_max_s, backoff_s * 2**attempt))
    backoff_max_s: float = 2.0
    bars: tuple[str, ...] = ()  # bar intervals of every subscription (none: no bars)


def subscribe_request(symbols: list[str], options: ClientOptions) -> dict[str, Any]:
    """The subscribe of a load-test client: its symbols at the scenario's throttle, with its bars."""
    request: dict[str, Any] = {"op": "subscribe", "id": 1, "symbols": symbols, "throttle_ms": options.throttle_ms}
    if options.bars:
        request["bars"] = list(options.bars)
    return request


def backoff(attempt: int, first: float, most: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect attempt `attempt` (0, 1, ...): exponential backoff
    with full jitter, uniform in [0, min(most, first * 2**attempt)]."""
    return (rng or random).uniform(0.0, min(most, first * 2 ** min(attempt, 30)))


def recovery_frame(ticks: list[dict[str, Any]], expected: dict[str, int]) -> bool:
    """Whether a `ticks` frame that follows a resubscribe's ack is a recovered frame: all of
    one symbol of `expected` (symbol -> the seq after `since`), continuing from it (the first
    tick's seq minus its `conflated` is that seq; a throttled recovery sends one tick). The
    symbol leaves `expected`, unless the frame is full (the hub splits long recoveries)."""
    symbol = ticks[0]["symbol"]
    after = expected.get(symbol)
    if after is None or ticks[0]["seq"] - ticks[0].get("conflated", 0) != after:
        return False
    if any(t["symbol"] != symbol for t in ticks):
        return False
    if len(ticks) >= RECOVERY_FRAME_TICKS:
        expected[symbol] = ticks[-1]["seq"] + 1
    else:
        del expected[symbol]
    return True


@dataclass
class Storm:
    """What the reconnects of one client process did (the recovery scenario)."""

    closes: Counter[int] = field(default_factory=Counter)  # close code (1006: no close frame) -> closes
    attempts: int = 0  # reconnect attempts (TCP connect, handshake, welcome, resubscribe)
    failed: int = 0  # attempts that did not end with an ack
    first_error: str = ""
    errors: Counter[str] = field(default_factory=Counter)  # "phase: exception type" -> failed attempts
    recovered_true: int = 0  # symbols answered recovered: true
    recovered_false: int = 0
    refused: list[str] = field(default_factory=list)  # a few symbols answered false, with their since
    recovered_frames: int = 0
    recovered_ticks: int = 0  # ticks received in recovered frames
    snapshot_ticks: int = 0  # ticks of snapshots after a resubscribe (a refused recovery)


class Client:
    """One simulated client across its connections: symbols, checks and epochs (a
    reconnect keeps them), and the monotonic times of its last close, ack and live tick."""

    __slots__ = ("acked_at", "check", "closed_at", "epochs", "live_at", "symbols")

    def __init__(self, symbols: list[str], totals: Totals) -> None:
        self.symbols = symbols
        self.check = StreamCheck(totals)
        self.epochs: dict[str, str] = {}  # symbol -> epoch, from the last ack or reset
        self.closed_at: float | None = None
        self.acked_at: float | None = None
        self.live_at: float | None = None

    def since(self) -> dict[str, Any]:
        """`since` of a resubscribe: the last seq of each symbol that had one, with its epoch."""
        out: dict[str, Any] = {}
        for symbol in self.symbols:
            seq = self.check.last_seq.get(symbol)
            if seq:
                epoch = self.epochs.get(symbol)
                out[symbol] = {"seq": seq, "epoch": epoch} if epoch else seq
        return out


def raise_nofile(wanted: int = 65536) -> int:
    """Raise this process's RLIMIT_NOFILE soft limit towards `wanted` (at most the hard
    limit). Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (asyncio logs those never retrieved)."""
    if not future.cancelled():
        future.exception()


class StreamConnection(asyncio.Protocol):
    """One stream connection of a client; checks and counts every frame it receives."""

    def __init__(self, client: Client, options: ClientOptions, totals: Totals, storm: Storm | None = None) -> None:
        self.client = client
        self.symbols = client.symbols
        self.options = options
        self.totals = totals
        self.check = client.check
        self.storm = storm or Storm()
        self.since: dict[str, int] = {}  # a resubscribe's since (symbol -> seq); set before sending it
        self.resubscribing = False
        self.recovering: dict[str, int] = {}  # after the ack: symbol -> seq its recovered frame starts at
        self.awaiting_live = False  # after a resubscribe's ack, until its first live tick
        self.gone: Callable[[int], None] | None = None  # called once when the server closes or drops it
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
        for future in (self.welcome, self.ack):  # failed by a lost connection whether awaited or not
            future.add_done_callback(_retrieve)
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
                self.close_by_server(int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005)
                continue
            else:
                continue
            totals.frames += 1
            totals.bytes += len(payload)
            kind = message.get("type")
            if kind == "ticks":
                if self.awaiting_live:
                    ticks = message["ticks"]
                    if self.recovering and recovery_frame(ticks, self.recovering):
                        self.check.ticks(ticks, recv_ns, mono_ns, snapshot=True)  # seq checks, no latency
                        totals.snapshot_ticks -= len(ticks)
                        self.storm.recovered_frames += 1
                        self.storm.recovered_ticks += len(ticks)
                        continue
                    self.awaiting_live = False
                    self.recovering = {}
                    self.client.live_at = time.monotonic()
                self.check.ticks(message["ticks"], recv_ns, mono_ns)
            elif kind == "bars":
                totals.bars += len(message["bars"])
                totals.bar_frames += 1
            elif kind == "snapshot":
                self.check.ticks(message["ticks"], recv_ns, mono_ns, snapshot=True)
                if self.awaiting_live:  # a snapshot follows the recovered frames
                    self.recovering = {}
                    self.storm.snapshot_ticks += len(message["ticks"])
            elif kind == "reset":
                self.check.reset(message["symbol"])
                self.client.epochs[message["symbol"]] = message.get("epoch", "")
            elif kind == "welcome":
                if not self.welcome.done():
                    self.welcome.set_result(message)
            elif kind == "ack":
                self.check.set_throttle(int(message.get("throttle_ms") or 0), self.options.tolerance_ms)
                self.client.epochs.update(message.get("epochs") or {})
                if self.resubscribing and not self.ack.done() and not message.get("rejected"):
                    recovered = message.get("recovered") or {}
                    self.recovering = {s: self.since[s] + 1 for s, ok in recovered.items() if ok and s in self.since}
                    self.awaiting_live = True
                    self.client.acked_at = time.monotonic()
                if not self.ack.done():
                    self.ack.set_result(message)
            elif kind == "error":
                totals.errors += 1
                if message.get("id") == 1 and not self.ack.done():  # our subscribe failed
                    error = RetryableError if message.get("code") == "internal_error" else RuntimeError
                    self.ack.set_exception(error(f"error {message.get('code')}: {message.get('message')}"))

    def close_by_server(self, code: int = 1005) -> None:
        if not self.closing:
            self.totals.disconnects += 1
            self._gone(code)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.closing = True
            self.totals.disconnects += 1
            self._gone(1006)
        self._fail(exc or ConnectionError("connection closed"))

    def _gone(self, code: int) -> None:
        gone, self.gone = self.gone, None
        if gone is not None:
            gone(code)


class ClientProcess:
    """The clients of one process and the command loop (see the module docstring)."""

    def __init__(self, pipe: Connection, specs: list[list[str]], options: ClientOptions) -> None:
        self.pipe = pipe
        self.specs = specs
        self.options = options
        self.totals = Totals()
        self.storm = Storm()
        self.connections: list[StreamConnection] = []
        self.ready: list[Client] = []  # clients whose first subscribe was acked without rejections
        self.reconnects: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.failed = 0
        self.retries = 0
        self.first_error = ""

    def _connection(self, client: Client) -> StreamConnection:
        return StreamConnection(client, self.options, self.totals, self.storm)

    async def open(self, symbols: list[str], gate: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        opts = self.options
        client = Client(symbols, self.totals)
        async with gate:
            phase = "connect"
            try:
                async with asyncio.timeout(opts.timeout):
                    _, conn = await loop.create_connection(lambda: self._connection(client), opts.host, opts.port)
                    self.connections.append(conn)
                    phase = "handshake" if not conn.upgraded else "welcome"
                    await conn.welcome
                    phase = "ack"
                    for attempt in range(1, SUBSCRIBE_ATTEMPTS + 1):
                        conn.send_json(subscribe_request(symbols, opts))
                        try:
                            ack = await conn.ack
                            break
                        except RetryableError:
                            if attempt == SUBSCRIBE_ATTEMPTS:
                                raise
                            self.retries += 1
                            conn.ack = loop.create_future()
                            conn.ack.add_done_callback(_retrieve)
                            await asyncio.sleep(0.1 * attempt)
                conn.ready = not ack.get("rejected")
                if not conn.ready:
                    raise RuntimeError(f"subscribe rejected: {ack.get('rejected')}")
                self.ready.append(client)
                if opts.reconnect:
                    conn.gone = lambda code: self._lost(client, code)
            except Exception as exc:
                self.failed += 1
                if not self.first_error:
                    self.first_error = f"waiting for {phase}: {type(exc).__name__}: {exc}"

    def _lost(self, client: Client, code: int) -> None:
        """The server closed (or dropped) a ready client's connection: count it, and
        reconnect unless the code says not to."""
        self.storm.closes[code] += 1
        client.closed_at = time.monotonic()
        client.acked_at = client.live_at = None
        if self.stopping or code in NO_RECONNECT:
            return
        task = asyncio.get_running_loop().create_task(self.reconnect(client))
        self.reconnects.add(task)
        task.add_done_callback(self.reconnects.discard)

    async def reconnect(self, client: Client) -> None:
        """Connect again with backoff until a resubscribe with `since` is acked."""
        loop = asyncio.get_running_loop()
        opts = self.options
        storm = self.storm
        attempt = 0
        while not self.stopping:
            await asyncio.sleep(backoff(attempt, opts.backoff_s, opts.backoff_max_s))
            attempt += 1
            storm.attempts += 1
            client.acked_at = client.live_at = None  # of this attempt only
            conn: StreamConnection | None = None
            phase = "connect"
            try:
                async with asyncio.timeout(opts.timeout):
                    _, conn = await loop.create_connection(lambda: self._connection(client), opts.host, opts.port)
                    phase = "welcome"
                    await conn.welcome
                    since = client.since()
                    conn.since = {s: v["seq"] if isinstance(v, dict) else v for s, v in since.items()}
                    conn.resubscribing = True
                    conn.send_json({**subscribe_request(client.symbols, opts), "since": since})
                    phase = "ack"
                    ack = await conn.ack
                if ack.get("rejected"):
                    raise RuntimeError(f"resubscribe rejected: {ack.get('rejected')}")
                if conn.closing:
                    raise ConnectionError("closed right after the ack")
            except Exception as exc:
                storm.failed += 1
                storm.errors[f"{phase}: {type(exc).__name__}"] += 1
                if not storm.first_error:
                    storm.first_error = f"reconnect, waiting for {phase}: {type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                continue
            self.connections.append(conn)
            for symbol, ok in (ack.get("recovered") or {}).items():
                if ok:
                    storm.recovered_true += 1
                else:
                    storm.recovered_false += 1
                    if len(storm.refused) < 10:
                        since_seq = conn.since.get(symbol)
                        storm.refused.append(f"{symbol} since {since_seq} epoch {client.epochs.get(symbol)}")
            conn.gone = lambda code: self._lost(client, code)
            return

    def storm_report(self, detail: bool) -> dict[str, Any]:
        """The reconnect counters; with `detail`, each ready client's last close, ack and
        live times (monotonic seconds, None when it has none)."""
        ready = self.ready
        report: dict[str, Any] = {
            "clients": len(ready),
            "closed": sum(c.closed_at is not None for c in ready),
            "acked": sum(c.acked_at is not None for c in ready),
            "live": sum(c.live_at is not None for c in ready),
            "closes": dict(self.storm.closes),
            "attempts": self.storm.attempts,
            "failed": self.storm.failed,
            "first_error": self.storm.first_error,
            "errors": dict(self.storm.errors),
            "recovered_true": self.storm.recovered_true,
            "recovered_false": self.storm.recovered_false,
            "refused": list(self.storm.refused),
            "recovered_frames": self.storm.recovered_frames,
            "recovered_ticks": self.storm.recovered_ticks,
            "snapshot_ticks": self.storm.snapshot_ticks,
        }
        if detail:
            report["times"] = [(c.closed_at, c.acked_at, c.live_at) for c in ready]
        return report

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(self.options.connect_concurrency)
        await asyncio.gather(*(self.open(spec, gate) for spec in self.specs))
        ready = self.ready
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
                self.storm.recovered_ticks = self.storm.recovered_frames = 0
                started, cpu_started = time.monotonic(), time.process_time()
                self.pipe.send(("ok", None))
            elif command == "report":
                report = self.totals.as_dict()
                report.update(seconds=time.monotonic() - started, cpu_s=time.process_time() - cpu_started)
                if self.options.reconnect:
                    report["recovered_ticks"] = self.storm.recovered_ticks
                self.pipe.send(("report", report))
            elif command == "storm":
                self.pipe.send(("storm", self.storm_report(bool(arg))))
            elif command == "final":
                stale = sum(c.check.stale(arg, c.symbols) for c in ready)
                self.pipe.send(("final", {"checked": sum(len(c.symbols) for c in ready), "stale": stale}))
            elif command == "stop":
                break
        self.stopping = True
        for task in self.reconnects:
            task.cancel()
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
