"""Real processes for tests: the project's Redis, hubs (uvicorn), feeds, private redis-servers.

A thin layer over `loadtest.services`, which starts and stops them (each in its own process
group, with its output in a log file). What is here is for tests only: a group of processes
stopped together (`Processes.stop_all()`, which fixtures call in a `finally`), readiness
checks that wait on a hub's /healthz or a feed's first ticks, and small HTTP helpers.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from loadtest.catalog import fetch_catalog
from loadtest.services import (
    LOOPBACK,
    REDIS_HINT,
    Hub,
    Service,
    ServiceError,
    free_port,
    redis_ping,
    service_env,
    spawn,
    start_feed,
    start_hub,
    start_redis,
    wait_until,
)

REDIS_PORT = 6379
REDIS_URL = f"redis://{LOOPBACK}:{REDIS_PORT}/0"
READY_TIMEOUT = 30.0  # generous: benchmarks may load this machine while tests run

S = TypeVar("S", bound=Service)


def require_redis(port: int = REDIS_PORT) -> None:
    """Fail (never skip) when the project's Redis does not answer, saying how to start it."""
    if not redis_ping(port, timeout=2.0):
        pytest.fail(
            f"Redis is not answering on {LOOPBACK}:{port}. These tests need it. Start it with:\n  {REDIS_HINT}",
            pytrace=False,
        )


def unique_prefix(label: str) -> str:
    """A Redis key and channel prefix of one test run: nothing it writes clashes with another's."""
    return f"mstest-{label}-{uuid.uuid4().hex[:10]}"


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str, str]:
    """GET http://127.0.0.1:port/path -> (status, content type, body); HTTP errors are returned, not raised."""
    url = f"http://{LOOPBACK}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def http_json(port: int, path: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET and decode a JSON body -> (status, body)."""
    status, _, body = http_get(port, path, timeout)
    return status, json.loads(body)


def catalog(port: int) -> dict[str, Any]:
    """The catalog from GET /api/v1/symbols: symbol -> its last tick (or None)."""
    return dict(fetch_catalog(f"http://{LOOPBACK}:{port}"))


def wait_healthy(hub: Hub, timeout: float = READY_TIMEOUT, want: int = 200) -> None:
    """Poll GET /healthz until it answers `want` (200, or 503 while the hub's Redis is away).
    Raises ServiceError with the hub's log when it exits or never answers so."""
    last = ["no answer"]

    def answers() -> bool:
        try:
            status, _, body = http_get(hub.port, "/healthz", timeout=2.0)
        except OSError as exc:
            last[0] = f"{type(exc).__name__}: {exc}"
            return False
        last[0] = f"{status} {body[:300]}"
        return status == want

    try:
        wait_until(answers, timeout, hub, f"GET /healthz on port {hub.port} to answer {want}")
    except ServiceError as exc:
        raise ServiceError(f"{exc}\n(last /healthz answer: {last[0]})") from None


def wait_snapshots(feed: Service, prefix: str, symbols: list[str], url: str = REDIS_URL) -> None:
    """Wait until every symbol has a snapshot in Redis under `prefix` (the feed publishes)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        wait_until(
            lambda: all(v is not None for v in client.hmget(f"{prefix}:snapshot", symbols)),
            READY_TIMEOUT,
            feed,
            f"a tick of each of {symbols}",
        )
    finally:
        client.close()


class Processes:
    """Starts the processes of one test (or module) and stops every one of them."""

    def __init__(self) -> None:
        self.services: list[Service] = []
        self.log_dir = Path(tempfile.mkdtemp(prefix="ms-test-"))

    def add(self, service: S) -> S:
        """Stop `service` with the others (for services started with loadtest.services directly)."""
        self.services.append(service)
        return service

    def hub(
        self,
        prefix: str | None,
        redis_url: str | None = REDIS_URL,
        env: dict[str, str] | None = None,
        port: int | None = None,
        wait: bool = True,
    ) -> Hub:
        """Start `python -m marketstream.serve` (one worker) on a free port, in an environment without
        the caller's MARKETSTREAM_* settings; wait until /healthz answers 200.

        `redis_url=None` starts the embedded default (in-memory layer, feed in the server).
        """
        hub_env = service_env(redis_url, prefix, env, clean=True)
        hub = self.add(start_hub(port or free_port(), 1, hub_env, self.log_dir))
        if wait:
            wait_healthy(hub)
        return hub

    def feed(
        self,
        prefix: str,
        symbols: Iterable[str],
        rate: float,
        *args: str,
        redis_url: str = REDIS_URL,
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> Service:
        """Start `manage.py runfeed --symbols ... --rate RATE ARGS`; wait until every symbol has a
        snapshot (a published tick). `env`: more environment (MARKETSTREAM_HISTORY_MAXLEN, ...)."""
        symbols = list(symbols)
        env = service_env(redis_url, prefix, env, clean=True)
        feed = self.add(start_feed(symbols, rate, env, self.log_dir, seed=None, extra_args=args))
        if wait:
            wait_snapshots(feed, prefix, symbols, redis_url)
        return feed

    def replay(
        self, prefix: str, path: str | Path, *args: str, redis_url: str = REDIS_URL, env: dict[str, str] | None = None
    ) -> Service:
        """Start `manage.py runfeed --replay PATH ARGS` (`--speed 2`, `--loop`); does not wait."""
        argv = [sys.executable, "manage.py", "runfeed", "--replay", str(path), *args]
        return self.add(spawn("replay", argv, service_env(redis_url, prefix, env, clean=True), self.log_dir))

    def redis_server(self, port: int) -> Service:
        """A private, throw-away redis-server on `port` (no persistence); waits until it answers."""
        return self.add(start_redis(port, self.log_dir, READY_TIMEOUT))

    def stop_all(self) -> None:
        """Stop every process, last started first (SIGTERM to its group, then SIGKILL)."""
        for service in reversed(self.services):
            service.stop()
        self.services.clear()

    def logs(self) -> str:
        """The logs of the processes started, for a failure report."""
        return "\n".join(f"--- {s.name} (pid {s.pid}) ---\n{s.log()[-4000:]}" for s in self.services)

    def remove_logs(self) -> None:
        shutil.rmtree(self.log_dir, ignore_errors=True)
