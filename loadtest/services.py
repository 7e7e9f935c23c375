"""The processes a benchmark (or a test) starts and measures: Redis, the hub, the feed.

The one implementation of starting and stopping them: the fan-out benchmark uses it, and
the tests build their fixtures on it (tests import loadtest, never the other way round).

Every service runs in its own session (process group), so a Ctrl-C in the terminal
reaches only the benchmark, which then stops the services itself, in order, by their
process-group id (uvicorn's workers included). Output goes to a log file per process,
never overwritten by a later process of the same name. Only loopback addresses are used.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from loadtest.catalog import STREAM_PATH

ROOT = Path(__file__).resolve().parent.parent  # the repository: manage.py, marketstream/
LOOPBACK = "127.0.0.1"
REDIS_HINT = 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no'
HUB_SETTINGS = "marketstream.settings"
SEED_APP = "loadtest.seed.asgi:application"  # the seed tutorial's pattern: the benchmarks' baseline
SEED_SETTINGS = "loadtest.seed.settings"


class ServiceError(RuntimeError):
    """A service did not start, or stopped when it should run."""


@dataclass
class Service:
    """A started process (the leader of its own process group) and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the process group, if the process still runs."""
        if self.running():
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> int:
        """Wait up to `timeout` s for the process to exit; its exit code. Raises subprocess.TimeoutExpired."""
        return self.process.wait(timeout)

    def stop(self, timeout: float = 5.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal the process group, wait up to `timeout` s, then SIGKILL it. Returns the exit code.

        After this returns, no process of the group runs (as far as SIGKILL reaches)."""
        if self.running():
            try:
                os.killpg(self.pid, sig)
                self.process.wait(timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)  # stragglers of the group (uvicorn workers)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            return self.process.wait(2.0)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> int | None:
        """SIGKILL the process group at once (a crash, not a shutdown)."""
        return self.stop(2.0, signal.SIGKILL)


@dataclass
class Hub(Service):
    """A hub (uvicorn) serving on LOOPBACK:`port`."""

    port: int

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The stream endpoint, ``ws://127.0.0.1:PORT/ws/v1/stream``."""
        return f"ws://{LOOPBACK}:{self.port}{STREAM_PATH}"


def free_port() -> int:
    """A TCP port on the loopback interface that is free now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def redis_ping(port: int, host: str = LOOPBACK, timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING on host:port."""
    try:
        with socket.create_connection((host, port), timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _log_path(log_dir: Path, name: str) -> Path:
    """``log_dir/name.log``, or ``name-2.log``, ... when a process of that name already ran."""
    path = log_dir / f"{name}.log"
    n = 1
    while path.exists():
        n += 1
        path = log_dir / f"{name}-{n}.log"
    return path


def _popen(name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = _log_path(log_dir, name)
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, log_path


def spawn(name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> Service:
    """Start `argv` in its own session, in the repository, with stdout and stderr to a log in `log_dir`."""
    process, log_path = _popen(name, argv, env, log_dir)
    return Service(name, process, log_path)


def start_redis(port: int, log_dir: Path, timeout: float = 10.0, wrapper: Sequence[str] = ()) -> Service:
    """A private, non-persistent redis-server on 127.0.0.1:`port`; waits until it answers.
    `wrapper`: a command that runs the server (valgrind, for loadtest.scriptcost)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceError("redis-server is not installed (apt-get install redis-server)")
    argv = [*wrapper, binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"]
    argv += ["--daemonize", "no", "--maxclients", "20000"]
    service = spawn("redis", argv, dict(os.environ), log_dir)
    wait_until(lambda: redis_ping(port), timeout, service, f"redis-server on port {port}")
    return service


def service_env(
    redis_url: str | None,
    prefix: str | None,
    extra: Mapping[str, str] | None = None,
    *,
    clean: bool = False,
) -> dict[str, str]:
    """The environment of a hub or feed process: this process's environment (with `clean`,
    less every MARKETSTREAM_* variable, REDIS_URL and PROMETHEUS_MULTIPROC_DIR it has), our Django settings, unbuffered
    output, REDIS_URL and MARKETSTREAM_PREFIX when given, then `extra`.

    `redis_url=None` (with `clean`) is the embedded default: in-memory layer, feed in the hub.
    """
    env = dict(os.environ)
    if clean:
        mine = ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")  # a hub of its own writes no metrics into another's
        env = {k: v for k, v in env.items() if not (k.startswith("MARKETSTREAM_") or k in mine)}
    # as `make run`: anonymous access and open metrics, unless `extra` says otherwise (the key tests do)
    env.setdefault("MARKETSTREAM_ANONYMOUS", "true")
    env.setdefault("MARKETSTREAM_METRICS_PUBLIC", "true")
    env.update(DJANGO_SETTINGS_MODULE=HUB_SETTINGS, PYTHONUNBUFFERED="1")
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    if prefix is not None:
        env["MARKETSTREAM_PREFIX"] = prefix
    env.update(extra or {})
    return env


def hub_env(redis_url: str, prefix: str, flush_ms: float, baseline: bool, layer: str | None = None) -> dict[str, str]:
    """The environment of a benchmark's hub and feed: production mode on `redis_url` under
    `prefix`. With `baseline`, the seed pattern's Django settings (loadtest.seed.settings):
    the feed must publish on the channel layer the seed hub listens to, so both take this
    environment; `layer` ("core", the default, or "pubsub") picks that layer. Our hub's
    settings choose their layer themselves."""
    extra = {"MARKETSTREAM_FLUSH_MS": str(flush_ms), "LOG_LEVEL": "WARNING"}
    if baseline:
        extra.update(DJANGO_SETTINGS_MODULE=SEED_SETTINGS, MARKETSTREAM_LAYER=layer or "core")
    elif layer is not None:
        extra["MARKETSTREAM_LAYER"] = layer
    return service_env(redis_url, prefix, extra)


def hub_argv(port: int, workers: int = 1, baseline: bool = False, log_level: str = "warning") -> list[str]:
    """The command line of a hub on LOOPBACK:`port`: ``python -m marketstream.serve``, or with
    `baseline` uvicorn on the seed app with the same server options as ours (websockets-sansio,
    no permessage-deflate, lifespan on, no access log)."""
    app = ["-m", "uvicorn", SEED_APP] if baseline else ["-m", "marketstream.serve"]
    argv = [sys.executable, *app, "--host", LOOPBACK, "--port", str(port), "--workers", str(workers)]
    if baseline:  # what marketstream.serve passes to uvicorn.run
        argv += ["--ws", "websockets-sansio", "--ws-per-message-deflate", "false"]
        argv += ["--lifespan", "on", "--no-access-log"]
    return [*argv, "--log-level", log_level]


def start_hub(port: int, workers: int, env: Mapping[str, str], log_dir: Path, baseline: bool = False) -> Hub:
    """Our hub, or with `baseline` the seed pattern (`loadtest.seed.asgi:application` with
    DJANGO_SETTINGS_MODULE=loadtest.seed.settings, whatever `env` says), on LOOPBACK:`port`.
    Does not wait: see `wait_until` (and the hub's /healthz)."""
    if baseline:
        env = {**env, "DJANGO_SETTINGS_MODULE": SEED_SETTINGS}
    process, log_path = _popen("hub", hub_argv(port, workers, baseline), env, log_dir)
    return Hub("hub", process, log_path, port)


def start_bare(port: int, env: Mapping[str, str], log_dir: Path) -> Hub:
    """The bare `websockets` broadcast server (loadtest/bare.py) on LOOPBACK:`port`, reading
    the feed of `env` (REDIS_URL, MARKETSTREAM_PREFIX). Does not wait."""
    argv = [sys.executable, "-m", "loadtest.bare", "--host", LOOPBACK, "--port", str(port)]
    process, log_path = _popen("bare", argv, env, log_dir)
    return Hub("bare", process, log_path, port)


def feed_argv(symbols: int | list[str], rate: float, *args: str) -> list[str]:
    """``manage.py runfeed`` of `symbols` (a number of generated symbols, or their names) at `rate` ticks/s."""
    argv = [sys.executable, "manage.py", "runfeed"]
    if isinstance(symbols, int):
        argv += ["--generated", str(symbols)]
    else:
        argv += ["--symbols", ",".join(symbols)]
    return [*argv, "--rate", str(rate), *args]


def start_feed(
    symbols: int | list[str],
    rate: float,
    env: Mapping[str, str],
    log_dir: Path,
    seed: int | None = 1,
    extra_args: Sequence[str] = (),
) -> Service:
    """A feed of `symbols` (see `feed_argv`) at `rate` ticks/s, random walk `seed` (None: runfeed's
    default); `extra_args`: more runfeed options (``--ticks N``, ``--duration S``). Does not wait
    for its first tick."""
    seeded = ["--seed", str(seed)] if seed is not None else []
    return spawn("feed", feed_argv(symbols, rate, *seeded, *extra_args), env, log_dir)


def wait_until(predicate: Callable[[], bool], timeout: float, service: Service | None = None, what: str = "") -> None:
    """Poll `predicate()` every 0.1 s until true; raise ServiceError on timeout, or when
    `service` has exited and the predicate is still false (with the tail of its log)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if service is not None and not service.running() and not predicate():
            raise ServiceError(
                f"{service.name} exited with {service.returncode} before {what or 'it was ready'}:\n"
                f"{service.log_tail()}"
            )
        if time.monotonic() > deadline:
            tail = f"\n{service.log_tail()}" if service is not None else ""
            raise ServiceError(f"timed out after {timeout:.0f} s waiting for {what or 'a service'}{tail}")
        time.sleep(0.1)


class ProcessMeter:
    """CPU time and RSS of a process and its descendants (uvicorn's supervisor and workers)."""

    def __init__(self, pid: int) -> None:
        root = psutil.Process(pid)
        self.processes = [root, *root.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the processes so far (those that still run)."""
        total = 0.0
        for process in self.processes:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss_bytes(self) -> int:
        total = 0
        for process in self.processes:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total


def delete_prefix(redis_url: str, prefix: str) -> int:
    """Delete the keys under `prefix` (a run's own). Returns how many."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2.0)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        return len(keys)
    finally:
        client.close()


def collect_replies(pipes: Sequence[Any], processes: Sequence[Any], timeout: float, poll: float = 0.2) -> list[Any]:
    """One reply (`(tag, value)`, the value kept) from each client process over its pipe,
    within `timeout` seconds overall; raises naming the process that died or stayed silent."""
    deadline = time.monotonic() + timeout
    out = []
    for pipe, process in zip(pipes, processes, strict=True):
        while not pipe.poll(poll):
            if not process.is_alive():
                raise RuntimeError(f"client process {process.pid} exited with {process.exitcode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"client process {process.pid} did not answer within {timeout:.0f} s")
        out.append(pipe.recv()[1])
    return out
