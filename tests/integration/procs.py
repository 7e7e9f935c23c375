"""Real processes for the integration tests: Redis checks, hubs (uvicorn), feeds, a private redis-server.

Every process is started with its output in a log file (shown when something goes wrong) and is
stopped by `Processes.stop_all()`, which fixtures call in a `finally`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from loadtest.services import free_port

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/0"
START_REDIS = 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no'
READY_TIMEOUT = 30.0  # generous: another engineer runs benchmarks on this machine


def require_redis(url: str = REDIS_URL) -> None:
    """Fail (never skip) when the project's Redis does not answer, saying how to start it."""
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except Exception as exc:
        pytest.fail(
            f"Redis is not answering on {url} ({type(exc).__name__}: {exc}).\n"
            f"The integration tests need it. Start it with:\n  {START_REDIS}",
            pytrace=False,
        )


def unique_prefix(label: str) -> str:
    return f"mstest-{label}-{uuid.uuid4().hex[:10]}"


def delete_prefix_keys(prefix: str, url: str = REDIS_URL) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.delete(f"{prefix}:catalog", f"{prefix}:snapshot")
    finally:
        client.close()


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str, str]:
    """GET http://127.0.0.1:port/path -> (status, content type, body); HTTP errors are returned, not raised."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def http_json(port: int, path: str, timeout: float = 5.0) -> tuple[int, Any]:
    status, _, body = http_get(port, path, timeout)
    return status, json.loads(body)


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not (k.startswith("MARKETSTREAM_") or k == "REDIS_URL")}
    env["PYTHONUNBUFFERED"] = "1"
    env["DJANGO_SETTINGS_MODULE"] = "marketstream.settings"
    env.update(extra)
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in `timeout` seconds."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(10)


@dataclass
class HubProc(Proc):
    port: int = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/v1/stream"


class Processes:
    """Starts the processes of one test (or module) and stops every one of them."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="ms-integration-"))

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
        log_path = self.tmp / f"{name}-{len(self.procs)}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        return popen, log_path

    def hub(
        self,
        prefix: str | None,
        redis_url: str | None = REDIS_URL,
        env: dict[str, str] | None = None,
        port: int | None = None,
        wait: bool = True,
    ) -> HubProc:
        """Start `python -m marketstream.serve` on a free port; wait until /healthz answers 200.

        `redis_url=None` starts the embedded default (in-memory layer, feed in the server).
        """
        port = port or free_port()
        extra = dict(env or {})
        if redis_url is not None:
            extra["REDIS_URL"] = redis_url
        if prefix is not None:
            extra["MARKETSTREAM_PREFIX"] = prefix
        argv = [sys.executable, "-m", "marketstream.serve", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--log-level", "warning"]
        popen, log_path = self._spawn("hub", argv, _clean_env(extra))
        hub = HubProc("hub", popen, log_path, port)
        self.procs.append(hub)
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
    ) -> Proc:
        """Start `manage.py runfeed`; wait until every symbol has a snapshot (a published tick)."""
        symbols = list(symbols)
        argv = [sys.executable, "manage.py", "runfeed", "--symbols", ",".join(symbols), "--rate", str(rate), *args]
        popen, log_path = self._spawn("feed", argv, _clean_env({"REDIS_URL": redis_url, "MARKETSTREAM_PREFIX": prefix}))
        feed = Proc("feed", popen, log_path)
        self.procs.append(feed)
        if wait:
            wait_snapshots(feed, prefix, symbols, redis_url)
        return feed

    def redis_server(self, port: int) -> Proc:
        """A private, throw-away redis-server on `port` (no persistence)."""
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--daemonize", "no"]
        popen, log_path = self._spawn("redis", argv, dict(os.environ))
        proc = Proc("redis", popen, log_path)
        self.procs.append(proc)
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            with contextlib.suppress(Exception):
                redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
                return proc
            if not proc.alive() or time.monotonic() > deadline:
                pytest.fail(f"private redis-server on port {port} did not start:\n{proc.log()}")
            time.sleep(0.05)

    def stop_all(self) -> None:
        """Stop every process, last started first; SIGKILL what does not stop."""
        for proc in reversed(self.procs):
            try:
                proc.stop(timeout=5.0)
            except Exception:
                with contextlib.suppress(Exception):
                    proc.kill()
        self.procs.clear()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (pid {p.pid}) ---\n{p.log()}" for p in self.procs)


def wait_healthy(hub: HubProc, timeout: float = READY_TIMEOUT, want: int = 200) -> None:
    """Poll GET /healthz until it answers `want`; fail with the hub's log if it never does."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not hub.alive():
            pytest.fail(f"hub exited with {hub.popen.returncode} before /healthz answered {want}:\n{hub.log()}")
        try:
            status, _, body = http_get(hub.port, "/healthz", timeout=2.0)
            if status == want:
                return
            last = f"{status} {body}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    pytest.fail(f"/healthz on port {hub.port} did not answer {want} in {timeout} s (last: {last}):\n{hub.log()}")


def wait_snapshots(feed: Proc, prefix: str, symbols: list[str], url: str = REDIS_URL) -> None:
    """Wait until every symbol is in the catalog and has a snapshot (the feed runs)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        while time.monotonic() < deadline:
            present = client.hmget(f"{prefix}:snapshot", symbols)
            if all(v is not None for v in present):
                return
            if not feed.alive() and feed.popen.returncode != 0:
                pytest.fail(f"feed exited with {feed.popen.returncode}:\n{feed.log()}")
            time.sleep(0.05)
    finally:
        client.close()
    pytest.fail(f"feed did not publish a tick of each of {symbols} in {READY_TIMEOUT} s:\n{feed.log()}")


def catalog(port: int) -> dict[str, Any]:
    """The catalog from GET /api/v1/symbols: symbol -> its last tick (or None)."""
    status, body = http_json(port, "/api/v1/symbols")
    assert status == 200, body
    return {entry["symbol"]: entry["last"] for entry in body["symbols"]}
