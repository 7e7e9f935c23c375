"""The processes a benchmark starts and measures: Redis, the hub, the feed.

Every service runs in its own session (process group), so a Ctrl-C in the terminal
reaches only the benchmark, which then stops the services itself, in order, by their
process-group id. Only loopback addresses are used.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

ROOT = Path(__file__).resolve().parent.parent  # the repository: manage.py, marketstream/
LOOPBACK = "127.0.0.1"
REDIS_HINT = 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no'


class ServiceError(RuntimeError):
    """A service did not start, or stopped when it should run."""


@dataclass
class Service:
    """A started process (the leader of its own process group) and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal the process group, wait up to `timeout` s, then SIGKILL it. Returns the exit code."""
        if self.running():
            try:
                os.killpg(self.pid, sig)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)  # stragglers of the group (uvicorn workers)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            code = self.process.wait(2.0)
        except subprocess.TimeoutExpired:
            code = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code


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


def spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Service:
    """Start `argv` in its own session with stdout and stderr to ``log_dir/name.log``."""
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return Service(name, process, log_path, log)


def start_redis(port: int, log_dir: Path) -> Service:
    """A private, non-persistent redis-server on 127.0.0.1:`port`; waits until it answers."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceError("redis-server is not installed (apt-get install redis-server)")
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        LOOPBACK,
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxclients",
        "20000",
    ]
    service = spawn("redis", argv, dict(os.environ), log_dir)
    wait_until(lambda: redis_ping(port), 10.0, service)
    return service


def hub_env(redis_url: str, prefix: str, flush_ms: float, baseline: bool, layer: str | None = None) -> dict[str, str]:
    """The environment of a hub or feed process: production mode on `redis_url` under `prefix`;
    with `baseline`, the seed tutorial's pattern (seed consumer, core layer unless `layer`
    says otherwise); `layer` ("pubsub" or "core") picks the channel layer of either."""
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_url,
        MARKETSTREAM_PREFIX=prefix,
        MARKETSTREAM_FLUSH_MS=str(flush_ms),
        DJANGO_SETTINGS_MODULE="marketstream.settings",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    if baseline:
        env.update(MARKETSTREAM_LAYER=layer or "core", MARKETSTREAM_CONSUMER="seed")
    else:
        env.pop("MARKETSTREAM_CONSUMER", None)
        env.update(MARKETSTREAM_LAYER=layer or "pubsub")
    return env


def start_hub(port: int, workers: int, env: dict[str, str], log_dir: Path, baseline: bool = False) -> Service:
    """Our hub, or with `baseline` the seed consumer on the core layer (both `marketstream.serve`;
    `env` from `hub_env` selects which)."""
    argv = [sys.executable, "-m", "marketstream.serve", "--host", LOOPBACK, "--port", str(port)]
    argv += ["--workers", str(workers), "--log-level", "warning"]
    return spawn("hub", argv, env, log_dir)


def start_feed(symbols: int, rate: float, env: dict[str, str], log_dir: Path, seed: int = 1) -> Service:
    argv = [sys.executable, "manage.py", "runfeed", "--generated", str(symbols), "--rate", str(rate)]
    argv += ["--seed", str(seed)]
    return spawn("feed", argv, env, log_dir)


def wait_until(predicate: object, timeout: float, service: Service | None = None, what: str = "") -> None:
    """Poll `predicate()` every 0.1 s until true; raise ServiceError on timeout or when
    `service` exits meanwhile (with the tail of its log)."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if service is not None and not service.running():
            raise ServiceError(f"{service.name} exited with {service.process.returncode}:\n{service.log_tail()}")
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
    """Delete the keys under `prefix` (a benchmark run's own). Returns how many."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2.0)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        return len(keys)
    finally:
        client.close()
