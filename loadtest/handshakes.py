"""`python -m loadtest.handshakes`: the cost of admitting WebSocket connections.

Starts one hub (``marketstream.serve``, one process): the embedded default, or with
``--redis`` on Redis at 127.0.0.1:6379 under a prefix of its own (deleted afterwards), in
both cases with a fresh key database (loadtest.keys). Then client processes (asyncio,
uvloop, the raw client of loadtest.asyncws: a few slices per frame, so the generator is
not the bottleneck) open ``--connections`` stream connections, at most ``--concurrency``
handshakes in flight overall. Each connection completes the WebSocket handshake and waits
for ``welcome``; every connection stays open until all are, so the hub holds them all at
once (with a key: one per-key lease each). How each client is admitted (``--auth``):

- ``anonymous``: no credential; the hub runs with MARKETSTREAM_ANONYMOUS=true;
- ``key``: ``Authorization: Bearer KEY``; anonymous access off;
- ``token``: first ``POST /api/v1/tokens`` with the key (a new HTTP connection each time),
  then the handshake with ``?token=mst_...``; anonymous access off. Its hub CPU includes
  the token requests.

Before measuring, ``--warmup`` connections are opened and closed (lazy imports and caches
of the first connections are not counted), and the hub's idle CPU is sampled for a second.

Measured, from the moment every client process is told to start until the last
connection got its ``welcome`` (or failed):

- handshakes per second: connections with a welcome / wall seconds;
- hub CPU per handshake: user + system CPU seconds of the hub process (psutil) in that
  window / connections with a welcome; also net of the hub's idle CPU rate (the embedded
  hub runs a small simulated feed) times the window;
- client CPU per handshake: the client processes' own CPU in the window, same divisor,
  to show the load generator was not the limit;
- failures, by phase and reason, and the first error;
- handshake latency: from the TCP connect (after the concurrency gate) to the welcome,
  p50 / p99 (token mode: from the token request);
- the hub's RSS growth per open connection (KB): RSS once all are open (after a short
  settle) minus RSS before, over connections open.

Prints a table, or one JSON document with ``--json``. Everything it started is stopped
on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

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
)
from loadtest.asyncws import handshake_request as ws_request
from loadtest.catalog import STREAM_PATH, healthy
from loadtest.clients import raise_nofile
from loadtest.keys import KeyDatabase, key_database
from loadtest.services import (
    LOOPBACK,
    Hub,
    ProcessMeter,
    ServiceError,
    collect_replies,
    delete_prefix,
    free_port,
    redis_ping,
    service_env,
    start_hub,
    wait_until,
)

AUTH_MODES = ("key", "token", "anonymous")
REDIS_URL = f"redis://{LOOPBACK}:6379/0"
SUBPROTOCOL = "marketstream.v1.json"
SETTLE_S = 1.0  # pause after the warm-up, and before reading the RSS with all connections open


def say(text: str) -> None:
    print(f"handshakes: {text}", file=sys.stderr, flush=True)


# -- the client side (runs in the client processes) ------------------------------------


@dataclass(frozen=True)
class Target:
    """Where and how the clients connect."""

    host: str
    port: int
    auth: str  # one of AUTH_MODES
    key: str  # the API key (key and token modes)
    timeout: float = 30.0  # seconds per connection: token request, connect, handshake, welcome


class Stream(asyncio.Protocol):
    """One stream connection: the upgrade, then frames until `welcome` (answers pings;
    the close frame of a refusal fails `welcome`)."""

    def __init__(self, request: bytes, accept: bytes) -> None:
        self.request, self.accept = request, accept
        self.parser = FrameParser()
        self.head = b""
        self.upgraded = False
        self.closing = False
        self.transport: asyncio.Transport | None = None
        self.welcome: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.welcome.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def _fail(self, exc: BaseException) -> None:
        if not self.welcome.done():
            self.welcome.set_exception(exc)

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
            except ConnectionError as exc:  # the refusal's body says why
                self._fail(ConnectionRefusedError(f"{exc}: {data[:120].decode('utf-8', 'replace')}"))
                self.close()
                return
            self.upgraded = True
        try:
            messages = self.parser.feed(data)
        except ConnectionError as exc:
            self._fail(exc)
            self.close()
            return
        for opcode, payload in messages:
            if opcode in (OP_TEXT, OP_BINARY):
                if self.welcome.done():
                    continue
                message = json.loads(payload)
                if message.get("type") == "welcome":
                    self.welcome.set_result(message)
            elif opcode == OP_PING and self.transport is not None:
                self.transport.write(frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self._fail(
                    ConnectionResetError(f"closed by the hub: {code} {payload[2:80].decode('utf-8', 'replace')}")
                )
                self.close()

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            if self.transport is not None and not self.transport.is_closing():
                with contextlib.suppress(Exception):
                    self.transport.write(close_frame(1000))
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._fail(exc or ConnectionResetError("connection closed before welcome"))
        if not self.lost.done():
            self.lost.set_result(None)


class TokenError(RuntimeError):
    """POST /api/v1/tokens did not answer 200 with a token."""


async def mint_token(target: Target) -> str:
    """POST /api/v1/tokens with the key, on a new HTTP/1.1 connection (Connection: close)."""
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(
            (
                f"POST /api/v1/tokens HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
                f"Authorization: Bearer {target.key}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ).encode()
        )
        response = await reader.read()
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    if " 200 " not in f"{status} ":
        raise TokenError(f"POST /api/v1/tokens: {status}: {body[:120].decode('utf-8', 'replace')}")
    token = json.loads(body).get("token")
    if not isinstance(token, str):
        raise TokenError("POST /api/v1/tokens: no token in the answer")
    return token


@dataclass
class Batch:
    """What one `open` command did in one client process."""

    opened: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # "phase: reason" -> connections
    first_error: str = ""
    latencies: list[float] = field(default_factory=list)  # seconds, token/connect to welcome

    def as_dict(self) -> dict[str, Any]:
        return {
            "opened": self.opened,
            "failed": self.failed,
            "errors": dict(self.errors),
            "first_error": self.first_error,
            "latencies": self.latencies,
        }


class ClientProcess:
    """The connections of one client process; commands from the main process over a pipe:
    ``("open", (count, concurrency))`` -> ``("opened", Batch.as_dict() + cpu_s, wall_s)``;
    ``("close", None)`` -> ``("closed", n)``; ``("stop", None)`` exits."""

    def __init__(self, pipe: Connection, target: Target) -> None:
        self.pipe = pipe
        self.target = target
        self.streams: list[Stream] = []

    async def connect(self, gate: asyncio.Semaphore, batch: Batch) -> None:
        target = self.target
        loop = asyncio.get_running_loop()
        async with gate:
            phase = "token" if target.auth == "token" else "connect"
            started = time.perf_counter()
            try:
                async with asyncio.timeout(target.timeout):
                    path, headers = STREAM_PATH, []
                    if target.auth == "token":
                        path += f"?token={await mint_token(target)}"
                        phase = "connect"
                    elif target.auth == "key":
                        headers.append(("Authorization", f"Bearer {target.key}"))
                    request, accept = ws_request(target.host, target.port, path, [SUBPROTOCOL], headers)
                    _, stream = await loop.create_connection(lambda: Stream(request, accept), target.host, target.port)
                    self.streams.append(stream)
                    phase = "welcome"
                    await stream.welcome
                batch.opened += 1
                batch.latencies.append(time.perf_counter() - started)
            except Exception as exc:
                batch.failed += 1
                reason = str(exc).split(":", 1)[0] if isinstance(exc, ConnectionError | TokenError) else ""
                batch.errors[f"{phase}: {type(exc).__name__} {reason}".strip()] += 1
                if not batch.first_error:
                    batch.first_error = f"waiting for {phase}: {type(exc).__name__}: {exc}"

    async def open(self, count: int, concurrency: int) -> dict[str, Any]:
        batch = Batch()
        gate = asyncio.Semaphore(max(1, concurrency))
        wall, cpu = time.monotonic(), time.process_time()
        await asyncio.gather(*(self.connect(gate, batch) for _ in range(count)))
        return {**batch.as_dict(), "wall_s": time.monotonic() - wall, "cpu_s": time.process_time() - cpu}

    async def close(self) -> int:
        streams, self.streams = self.streams, []
        for stream in streams:
            stream.close()
        waiting = [s.lost for s in streams if not s.lost.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=10.0)
        return len(streams)

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        self.pipe.send(("ready", None))
        while True:
            try:
                command, arg = await loop.run_in_executor(None, self.pipe.recv)
            except (EOFError, OSError):
                break
            if command == "open":
                self.pipe.send(("opened", await self.open(*arg)))
            elif command == "close":
                self.pipe.send(("closed", await self.close()))
            else:
                break
        await self.close()


def client_main(pipe: Connection, target: Target) -> None:
    """Entry point of a client process (multiprocessing, spawn)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_nofile()
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(ClientProcess(pipe, target).main())


# -- the main process -------------------------------------------------------------------


class Clients:
    """The client processes, each given a share of every `open`."""

    def __init__(self, target: Target, procs: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[Any] = []
        for _ in range(procs):
            parent, child = ctx.Pipe()
            process = ctx.Process(target=client_main, args=(child, target), daemon=True)
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)
        self.replies(60.0)  # "ready": imports done, loop running

    def replies(self, timeout: float) -> list[Any]:
        """One reply from every process, within `timeout` seconds overall."""
        return collect_replies(self.pipes, self.processes, timeout, poll=0.05)

    def open(self, count: int, concurrency: int, timeout: float) -> list[dict[str, Any]]:
        """Open `count` connections over all processes, `concurrency` in flight overall."""
        n = len(self.pipes)
        for i, pipe in enumerate(self.pipes):
            pipe.send(("open", (count // n + (i < count % n), max(1, concurrency // n + (i < concurrency % n)))))
        return self.replies(timeout)

    def close_all(self) -> int:
        for pipe in self.pipes:
            pipe.send(("close", None))
        return sum(self.replies(30.0))

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop", None))
        deadline = time.monotonic() + 10.0
        for process in self.processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join(2.0)
        for pipe in self.pipes:
            pipe.close()


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile `p` (0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered), math.ceil(p / 100 * len(ordered))) - 1)]


@contextlib.contextmanager
def hub_for(args: argparse.Namespace, keys: KeyDatabase, logs: Path) -> Iterator[Hub]:
    """One hub process with the key database, embedded or on Redis under a unique prefix
    (its keys deleted on exit); anonymous access on only with ``--auth anonymous``."""
    redis_url = prefix = None
    if args.redis:
        if not redis_ping(6379):
            raise ServiceError(f"--redis: no Redis answers on {LOOPBACK}:6379")
        redis_url, prefix = REDIS_URL, f"handshakes-{os.getpid()}-{time.time_ns() // 1_000_000 % 10**9}"
    extra = {
        **keys.env,
        "MARKETSTREAM_ANONYMOUS": "true" if args.auth == "anonymous" else "false",
        "MARKETSTREAM_MAX_CONNECTIONS": str(max(10_000, 2 * (args.connections + args.warmup))),
        "LOG_LEVEL": "WARNING",
    }
    env = service_env(redis_url, prefix, extra, clean=True)
    hub = start_hub(free_port(), 1, env, logs)
    try:
        wait_until(lambda: healthy(hub.base), 30.0, hub, "the hub's /healthz")
        yield hub
    finally:
        hub.stop()
        if redis_url is not None and prefix is not None:
            with contextlib.suppress(Exception):
                delete_prefix(redis_url, prefix)


def measure(args: argparse.Namespace, hub: Hub, keys: KeyDatabase) -> dict[str, Any]:
    """The warm-up, the idle sample, then the measured opening of every connection."""
    meter = ProcessMeter(hub.pid)
    target = Target(LOOPBACK, hub.port, args.auth, keys.key, args.timeout)
    clients = Clients(target, args.client_procs)
    try:
        if args.warmup:
            warm = clients.open(args.warmup, min(args.concurrency, args.warmup), args.timeout + 30)
            if not sum(b["opened"] for b in warm):
                first = next((b["first_error"] for b in warm if b["first_error"]), "")
                raise RuntimeError(f"no warm-up connection opened: {first}")
            clients.close_all()
            time.sleep(SETTLE_S)
        idle_t, idle_cpu = time.monotonic(), meter.cpu_seconds()
        time.sleep(1.0)
        idle_cores = (meter.cpu_seconds() - idle_cpu) / (time.monotonic() - idle_t)
        rss0 = meter.rss_bytes()
        cpu0, t0 = meter.cpu_seconds(), time.monotonic()
        batches = clients.open(args.connections, args.concurrency, args.timeout * (1 + args.connections / 10) + 60)
        wall = time.monotonic() - t0
        hub_cpu = meter.cpu_seconds() - cpu0
        time.sleep(SETTLE_S)
        rss1 = meter.rss_bytes()
        alive = hub.running()
        clients.close_all()
    finally:
        clients.stop()
    opened = sum(b["opened"] for b in batches)
    failed = sum(b["failed"] for b in batches)
    errors: Counter[str] = Counter()
    for b in batches:
        errors.update(b["errors"])
    latencies = [x for b in batches for x in b["latencies"]]
    client_cpu = sum(b["cpu_s"] for b in batches)
    per = 1 / opened if opened else None

    def ms(value: float | None) -> float | None:
        return round(value * 1000, 3) if value is not None else None

    return {
        "auth": args.auth,
        "layer": "redis" if args.redis else "embedded",
        "connections": args.connections,
        "concurrency": args.concurrency,
        "client_procs": args.client_procs,
        "opened": opened,
        "failed": failed,
        "errors": dict(errors),
        "first_error": next((b["first_error"] for b in batches if b["first_error"]), ""),
        "wall_s": round(wall, 3),
        "handshakes_per_s": round(opened / wall, 1) if wall > 0 else None,
        "hub_cpu_s": round(hub_cpu, 3),
        "hub_cpu_ms_per_handshake": ms(hub_cpu * per) if per else None,
        "hub_idle_cores": round(idle_cores, 4),
        "hub_cpu_ms_per_handshake_net_of_idle": ms(max(0.0, hub_cpu - idle_cores * wall) * per) if per else None,
        "hub_cpu_cores": round(hub_cpu / wall, 3) if wall > 0 else None,
        "client_cpu_s": round(client_cpu, 3),
        "client_cpu_ms_per_handshake": ms(client_cpu * per) if per else None,
        "client_cpu_cores": round(client_cpu / wall, 3) if wall > 0 else None,
        "latency_ms_p50": ms(percentile(latencies, 50)),
        "latency_ms_p99": ms(percentile(latencies, 99)),
        "hub_rss_mb_before": round(rss0 / 2**20, 1),
        "hub_rss_mb_open": round(rss1 / 2**20, 1),
        "hub_rss_kb_per_connection": round((rss1 - rss0) / 1024 * per, 2) if per else None,
        "hub_alive": alive,
    }


ROWS = (
    ("opened / failed", lambda r: f"{r['opened']} / {r['failed']}"),
    ("wall s", lambda r: r["wall_s"]),
    ("handshakes/s", lambda r: r["handshakes_per_s"]),
    ("hub CPU ms/handshake", lambda r: r["hub_cpu_ms_per_handshake"]),
    ("  net of idle", lambda r: r["hub_cpu_ms_per_handshake_net_of_idle"]),
    ("hub CPU cores", lambda r: r["hub_cpu_cores"]),
    ("client CPU ms/handshake", lambda r: r["client_cpu_ms_per_handshake"]),
    ("client CPU cores", lambda r: r["client_cpu_cores"]),
    ("latency ms p50 / p99", lambda r: f"{r['latency_ms_p50']} / {r['latency_ms_p99']}"),
    ("hub RSS MB before / open", lambda r: f"{r['hub_rss_mb_before']} / {r['hub_rss_mb_open']}"),
    ("hub RSS KB/connection", lambda r: r["hub_rss_kb_per_connection"]),
)


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['connections']} connections, auth {result['auth']}, {result['layer']} hub, "
        f"concurrency {result['concurrency']}, {result['client_procs']} client process(es)"
    ]
    lines += [f"  {name:<26} {value(result)}" for name, value in ROWS]
    if result["errors"]:
        lines.append(f"  errors: {result['errors']}; first: {result['first_error']}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.handshakes", description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=1000, help="connections opened and held (default 1000)")
    p.add_argument("--concurrency", type=int, default=100, help="handshakes in flight overall (default 100)")
    p.add_argument("--auth", choices=AUTH_MODES, default="key", help="how clients are admitted (default key)")
    p.add_argument("--redis", action="store_true", help=f"hub on Redis at {LOOPBACK}:6379 (default: embedded)")
    p.add_argument("--client-procs", type=int, default=1, help="client processes (default 1)")
    p.add_argument("--warmup", type=int, default=20, help="connections opened and closed before measuring")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per connection")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    return p


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.connections < 1 or args.concurrency < 1 or args.client_procs < 1 or args.warmup < 0:
        p.error("--connections, --concurrency and --client-procs must be >= 1, --warmup >= 0")
    limit = raise_nofile()
    if limit < args.connections + 1024:
        say(f"RLIMIT_NOFILE is {limit}: maybe too low for {args.connections} connections")
    signal.signal(signal.SIGTERM, _interrupt)
    logs = Path(tempfile.mkdtemp(prefix="handshakes-"))
    try:
        with key_database() as keys, hub_for(args, keys, logs) as hub:
            say(f"hub pid {hub.pid} on port {hub.port} ({'redis' if args.redis else 'embedded'}, auth {args.auth})")
            result = measure(args, hub, keys)
    except (KeyboardInterrupt, ServiceError, RuntimeError, TimeoutError) as exc:
        say(f"stopped: {type(exc).__name__}: {exc}; hub log in {logs}")
        return 2
    shutil.rmtree(logs, ignore_errors=True)
    print(json.dumps(result) if args.json else table(result), flush=True)
    return 0 if result["opened"] else 1


if __name__ == "__main__":
    sys.exit(main())
