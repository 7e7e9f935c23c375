"""API keys for tests that run real hubs: a throw-away key database, and helpers to use the keys.

`KeyStore` makes a fresh database (a SQLite file in a temporary data directory, or a
PostgreSQL database `mstest_<hex>` on 127.0.0.1:5432), migrates it once, and runs the
operator's commands in it (`createkey`, `revokekey`, `shell -c`) as subprocesses, with
REDIS_URL and MARKETSTREAM_PREFIX set so that every change is announced to the hubs over
Redis. `env()` is the environment a hub needs to read those keys, with anonymous access
and public metrics off.

Also here: `refused()` (the status of a refused WebSocket handshake), `connect()` (a
client that does not wait for a welcome, for connections that are accepted and closed at
once) and `http()` (an HTTP request with headers, errors returned rather than raised).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from loadtest.services import (
    HUB_SETTINGS,
    ROOT,
    Hub,
    Service,
    delete_prefix,
    free_port,
    hub_argv,
    service_env,
    spawn,
)
from tests.support.client import MSGPACK, WAIT, StreamClient
from tests.support.processes import Processes, unique_prefix, wait_healthy

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
POSTGRES_HINT = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
COMMAND_TIMEOUT = 60.0


class KeyStore:
    """A fresh key database and the `manage.py` commands that change it.

    `KeyStore(redis_url, prefix)` is SQLite; `KeyStore(redis_url, prefix, postgresql=True)`
    PostgreSQL (a failure, never a skip, when it does not answer). `close()` removes it.
    """

    def __init__(self, redis_url: str, prefix: str, *, postgresql: bool = False) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.data_dir = Path(tempfile.mkdtemp(prefix="ms-keys-"))
        self.database: str | None = None
        self.database_url = ""
        try:
            if postgresql:
                self.database = f"mstest_{uuid.uuid4().hex[:12]}"
                self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
                self.database_url = f"{POSTGRES}/{self.database}"
            self.manage("migrate", "--noinput")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _admin(statement: sql.Composed) -> None:
        """Run `statement` on PostgreSQL's `postgres` database (autocommit)."""
        try:
            with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True, connect_timeout=3) as conn:
                conn.execute(statement)
        except psycopg.OperationalError as exc:
            pytest.fail(
                f"PostgreSQL is not answering at {POSTGRES} ({exc}). These tests need it. Start it with:\n"
                f"  {POSTGRES_HINT}",
                pytrace=False,
            )

    def env(self, **more: str) -> dict[str, str]:
        """The environment of a hub on this database: keys required, metrics not public; `more` on top."""
        env = {
            "MARKETSTREAM_ANONYMOUS": "false",
            "MARKETSTREAM_METRICS_PUBLIC": "false",
            "MARKETSTREAM_DATA_DIR": str(self.data_dir),
            "DATABASE_URL": self.database_url,  # empty: the SQLite file in the data directory
        }
        env.update(more)
        return env

    def command_env(self) -> dict[str, str]:
        """The environment of a `manage.py` command: this database, and Redis to announce changes on."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not (k.startswith("MARKETSTREAM_") or k in ("REDIS_URL", "DATABASE_URL"))
        }
        env.update(
            DJANGO_SETTINGS_MODULE=HUB_SETTINGS,
            PYTHONUNBUFFERED="1",
            REDIS_URL=self.redis_url,
            MARKETSTREAM_PREFIX=self.prefix,
            MARKETSTREAM_DATA_DIR=str(self.data_dir),
            DATABASE_URL=self.database_url,
        )
        return env

    def manage(self, *args: str) -> str:
        """Run `python manage.py ARGS` in this database; its stdout. A failure shows its output."""
        run = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env=self.command_env(),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        if run.returncode != 0:
            pytest.fail(
                f"manage.py {' '.join(args)[:200]} exited with {run.returncode}:\n"
                f"{run.stdout[-2000:]}\n{run.stderr[-4000:]}",
                pytrace=False,
            )
        return run.stdout

    def create(self, name: str, *args: str) -> str:
        """`manage.py createkey --name NAME ARGS`: the new key."""
        key = self.manage("createkey", "--name", name, *args).strip()
        assert key.startswith("ms_"), f"createkey printed {key!r:.80}, not a key"
        return key

    def revoke(self, name: str) -> None:
        """`manage.py revokekey NAME`."""
        self.manage("revokekey", name)

    def run(self, code: str) -> str:
        """`manage.py shell -c CODE` (ORM edits: `k = ApiKey.objects.get(name='x'); k.symbols = 'AAPL'; k.save()`)."""
        return self.manage("shell", "-c", code)

    def close(self) -> None:
        """Remove the data directory, and drop the PostgreSQL database (stop the hubs that use it first)."""
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.database is not None:
            database, self.database = self.database, None
            self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def connect(
    url: str,
    headers: Mapping[str, str] | None = None,
    origin: str | None = None,
) -> StreamClient:
    """Open a msgpack connection without waiting for the welcome (a connection that is
    accepted, then closed at once, gets none). Close it with `aclose()`."""
    ws = await ws_connect(
        url,
        subprotocols=[MSGPACK],
        additional_headers=dict(headers or {}),
        origin=Origin(origin) if origin is not None else None,
        compression=None,
        max_size=None,
        ping_interval=None,
        open_timeout=WAIT,
        close_timeout=5,
    )
    return StreamClient(ws, "msgpack")


async def welcomed(url: str, headers: Mapping[str, str] | None = None, origin: str | None = None) -> StreamClient:
    """`connect`, and wait for the welcome (a test failure if anything else comes first)."""
    client = await connect(url, headers, origin)
    try:
        first = await client.wait_for(lambda f: True)
    except BaseException:
        await client.aclose()
        raise
    if first.type != "welcome":
        await client.aclose()
        raise AssertionError(f"the first frame is not a welcome: {first.message}")
    return client


def close_reason(client: StreamClient) -> str:
    """The reason of the close frame the server sent ("" when none came)."""
    rcvd = client.ws.protocol.close_rcvd
    return rcvd.reason if rcvd is not None else ""


@dataclass(frozen=True)
class Refusal:
    status: int
    body: str
    content_type: str = ""


async def refused(url: str, headers: Mapping[str, str] | None = None, origin: str | None = None) -> Refusal:
    """The HTTP status and body of a handshake that must be refused (a failure if it is accepted)."""
    try:
        client = await connect(url, headers, origin)
    except InvalidStatus as exc:
        body = exc.response.body or b""
        content_type = exc.response.headers.get("Content-Type", "")
        return Refusal(exc.response.status_code, body.decode(errors="replace"), content_type)
    first = None
    try:
        first = await client.wait_for(lambda f: True, within=2.0)
    except AssertionError:
        pass
    finally:
        await client.aclose()
    raise AssertionError(
        f"the handshake was accepted (first frame: {first.message if first else None}; close {client.close_code})"
    )


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    url: str,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    data: bytes | None = None,
    timeout: float = 5.0,
) -> Response:
    """An HTTP request; HTTP errors are returned as responses, not raised."""
    if method == "POST" and data is None:
        data = b""
    request = urllib.request.Request(url, data=data, headers=dict(headers or {}), method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return Response(int(answer.status), _lower(answer.headers.items()), answer.read().decode())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, _lower(exc.headers.items()), exc.read().decode())


def _lower(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in items}


@dataclass
class Deployment:
    """Hubs that require keys, a feed, and their key database, under one Redis prefix."""

    prefix: str
    store: KeyStore
    procs: Processes
    hubs: list[Hub]
    feed: Service | None

    def hub(self, **env: str) -> Hub:
        """One more hub on this prefix and key database (`env` over `store.env()`), stopped with the others."""
        return self.procs.hub(self.prefix, self.store.redis_url, env=self.store.env(**env))

    def debug_hub(self, **env: str) -> Hub:
        """A hub that logs everything: LOG_LEVEL=DEBUG, and uvicorn at debug. Its command line
        says `--log-level debug` itself (`Processes.hub` passes `--log-level warning`, which
        would override UVICORN_LOG_LEVEL)."""
        port = free_port()
        extra = self.store.env(LOG_LEVEL="DEBUG", UVICORN_LOG_LEVEL="debug", **env)
        full = service_env(self.store.redis_url, self.prefix, extra, clean=True)
        started = spawn("hub-debug", hub_argv(port, 1, log_level="debug"), full, self.procs.log_dir)
        hub = self.procs.add(Hub(started.name, started.process, started.log_path, port))
        wait_healthy(hub)
        return hub

    def logs(self) -> str:
        return self.procs.logs()


@contextlib.contextmanager
def deployment(
    label: str,
    redis_url: str,
    hubs: Sequence[Mapping[str, str]] = ({},),
    symbols: Sequence[str] = (),
    rate: float = 60.0,
    *,
    postgresql: bool = False,
) -> Iterator[Deployment]:
    """A key database, then one hub per entry of `hubs` (each its extra environment) and,
    with `symbols`, a feed of them at `rate` ticks/s. Everything is stopped and removed
    after, the Redis keys under the prefix too."""
    prefix = unique_prefix(label)
    store = KeyStore(redis_url, prefix, postgresql=postgresql)
    procs = Processes()
    try:
        started = [procs.hub(prefix, redis_url, env=store.env(**extra)) for extra in hubs]
        feed = procs.feed(prefix, list(symbols), rate, redis_url=redis_url) if symbols else None
        yield Deployment(prefix, store, procs, started, feed)
    finally:
        procs.stop_all()
        procs.remove_logs()
        store.close()
        delete_prefix(redis_url, prefix)
