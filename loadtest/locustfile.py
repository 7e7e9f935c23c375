"""`locust -f loadtest`: WebSocket users of the marketstream hub.

Each user opens one stream connection (websocket-client, cooperative under locust's
gevent), waits for `welcome`, subscribes to K symbols drawn from the catalog (or from
``--symbol-list``) and reads frames in a receive greenlet until it stops.

What goes to locust's statistics, and why this way:

- one request event per tick frame, type ``WS``, name ``ticks``: response time = the
  frame's largest end-to-end latency (receive time minus tick ``ts``; the oldest tick
  of the frame waited longest), response length = frame bytes. One event per frame, not
  per tick, keeps locust's own cost per tick small: at high rates a frame carries several
  ticks. Locust's "requests/s" column is therefore frames/s.
- ``WS snapshot``: the snapshot frame after a subscribe (its latency is the tick's age).
- ``WS ping``: round trip of a ``ping`` op every ``--ping-every`` seconds (control path).
- failures ``WS seq violation`` / ``WS throttle violation`` / ``WS disconnect``, so that
  they show in the failures tab and CSV.
- counters that locust has no column for (ticks, per-tick latency percentiles, gaps,
  bytes, violations) are kept per process, summed on the master in distributed runs,
  logged at test stop, served as JSON at ``/marketstream`` by the web UI, and written to
  ``<csv prefix>_ticks.json`` with ``--csv``.

Only this module of loadtest/ defines User classes: locust imports every ``*.py`` file
of the directory, and the others import cleanly under gevent and define none.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import time
from typing import Any

import gevent
import msgpack
import orjson
import websocket
from gevent.lock import Semaphore
from locust import User, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtest.catalog import CatalogError, choose, fetch_catalog, stream_url
from loadtest.streamcheck import StreamCheck, Totals, percentiles

log = logging.getLogger("marketstream.locust")

TOTALS = Totals()  # this process's counters (a worker's: since its last report to the master)
CATALOG_TTL = 30.0
_catalog: tuple[float, list[str]] = (0.0, [])
_catalog_lock = Semaphore()


def record(
    fire: Any,
    name: str,
    response_time: float,
    length: int,
    exception: Exception | None = None,
    request_type: str = "WS",
) -> None:
    """Fire one locust request event (`fire` is `events.request.fire` of the environment)."""
    fire(
        request_type=request_type,
        name=name,
        response_time=response_time,
        response_length=length,
        exception=exception,
        context={},
    )


class SeqViolation(Exception):
    """A tick whose seq is not above the last one seen for its symbol on this connection."""


class ThrottleViolation(Exception):
    """Two ticks of one symbol closer than the subscription's throttle."""


class Disconnected(Exception):
    """The server closed the connection, or it was lost, while the user was running."""


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    parser.add_argument("--symbols-per-user", type=int, default=10, help="symbols each user subscribes to")
    parser.add_argument("--throttle-ms", type=int, default=0, help="throttle_ms of each subscription (0: every tick)")
    parser.add_argument("--encoding", choices=["msgpack", "json"], default="msgpack", help="frame encoding")
    parser.add_argument("--key", default="", is_secret=True, help="API key, sent as 'Authorization: Bearer KEY'")
    parser.add_argument("--symbol-list", default="", help="comma-separated symbols to draw from (default: catalog)")
    parser.add_argument("--ping-every", type=float, default=5.0, help="seconds between ping ops (0: none)")
    parser.add_argument(
        "--throttle-tolerance-ms", type=float, default=20.0, help="jitter allowed before a throttle violation"
    )


def catalog_symbols(host: str) -> list[str]:
    """The catalog's symbols, fetched at most every CATALOG_TTL seconds per process."""
    global _catalog
    with _catalog_lock:
        fetched_at, symbols = _catalog
        if symbols and time.monotonic() - fetched_at < CATALOG_TTL:
            return symbols
        start = time.perf_counter()
        try:
            symbols = sorted(fetch_catalog(host))
        except CatalogError as exc:
            record(events.request.fire, "/api/v1/symbols", 0, 0, exc, request_type="GET")
            raise
        record(
            events.request.fire,
            "/api/v1/symbols",
            (time.perf_counter() - start) * 1000,
            len(symbols),
            request_type="GET",
        )
        _catalog = (time.monotonic(), symbols)
        return symbols


class HubStreamUser(User):
    """One stream connection subscribed to ``--symbols-per-user`` symbols."""

    host = "http://127.0.0.1:8000"

    def wait_time(self) -> float:
        every = float(self.environment.parsed_options.ping_every or 0)
        return every if every > 0 else 3600.0

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.ws: websocket.WebSocket | None = None
        self.receiver: gevent.Greenlet | None = None
        self.check = StreamCheck(TOTALS)
        self.ids = itertools.count(1)
        self.pings: dict[int, float] = {}
        self.stopping = False

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        fire = self.environment.events.request.fire
        if opts.symbol_list:
            pool = [s.strip().upper() for s in opts.symbol_list.split(",") if s.strip()]
        else:
            pool = catalog_symbols(self.host)
        symbols = choose(pool, opts.symbols_per_user, random.Random())
        headers = [f"Authorization: Bearer {opts.key}"] if opts.key else []
        start = time.perf_counter()
        try:
            self.ws = websocket.create_connection(
                stream_url(self.host),
                subprotocols=[f"marketstream.v1.{opts.encoding}"],
                header=headers,
                timeout=10,
                skip_utf8_validation=True,
            )
            welcome = self._read_control("welcome")
            record(fire, "connect", (time.perf_counter() - start) * 1000, len(str(welcome)))
            start = time.perf_counter()
            self._send({"op": "subscribe", "id": 0, "symbols": symbols, "throttle_ms": opts.throttle_ms})
            ack = self._read_control("ack")
        except Exception as exc:
            record(fire, "connect", (time.perf_counter() - start) * 1000, 0, exc)
            self._close()
            raise
        record(fire, "subscribe", (time.perf_counter() - start) * 1000, len(ack.get("symbols", [])))
        self.check.set_throttle(int(ack.get("throttle_ms") or 0), opts.throttle_tolerance_ms)
        assert self.ws is not None
        self.ws.settimeout(None)
        self.receiver = gevent.spawn(self._receive_loop)

    def on_stop(self) -> None:
        self.stopping = True
        if self.receiver is not None:
            self.receiver.kill(block=False)
        self._close()

    @task
    def ping(self) -> None:
        """Send a `ping` op; the receive greenlet reports its round trip as ``WS ping``."""
        if self.ws is None or not self.environment.parsed_options.ping_every:
            return
        request_id = next(self.ids)
        self.pings[request_id] = time.perf_counter()
        self._send({"op": "ping", "id": request_id})

    # -- internals ----------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        self.ws.send(json.dumps(message))

    def _decode(self, opcode: int, data: bytes) -> Any:
        if opcode == websocket.ABNF.OPCODE_BINARY:
            return msgpack.unpackb(data, raw=False)
        return orjson.loads(data)

    def _read_control(self, wanted: str) -> dict[str, Any]:
        """Read frames until one of type `wanted`; raise on `error` frames or a closed socket."""
        assert self.ws is not None
        while True:
            opcode, data = self.ws.recv_data()
            if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                raise Disconnected(f"expected {wanted!r}, got a frame with opcode {opcode}")
            message = self._decode(opcode, data)
            kind = message.get("type")
            if kind == wanted:
                return dict(message)
            if kind == "error":
                raise RuntimeError(f"expected {wanted!r}, got error {message.get('code')}: {message.get('message')}")

    def _receive_loop(self) -> None:
        ws = self.ws
        assert ws is not None
        fire = self.environment.events.request.fire
        check = self.check
        binary = websocket.ABNF.OPCODE_BINARY
        while True:
            try:
                opcode, data = ws.recv_data()
            except Exception as exc:
                if not self.stopping:
                    TOTALS.disconnects += 1
                    record(fire, "disconnect", 0, 0, Disconnected(f"{type(exc).__name__}: {exc}"))
                return
            recv_ns, mono_ns = time.time_ns(), time.monotonic_ns()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                if not self.stopping:
                    TOTALS.disconnects += 1
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                    record(fire, "disconnect", 0, 0, Disconnected(f"closed by the server with {code}"))
                return
            message = msgpack.unpackb(data, raw=False) if opcode == binary else orjson.loads(data)
            kind = message.get("type")
            TOTALS.frames += 1
            TOTALS.bytes += len(data)
            if kind == "ticks" or kind == "snapshot":
                seq_before, throttle_before = TOTALS.seq_violations, TOTALS.throttle_violations
                worst_us = check.ticks(message["ticks"], recv_ns, mono_ns, snapshot=kind == "snapshot")
                if kind == "snapshot":
                    age = max(0, recv_ns - max(t["ts"] for t in message["ticks"])) / 1e6 if message["ticks"] else 0
                    record(fire, "snapshot", age, len(data))
                else:
                    record(fire, "ticks", worst_us / 1000, len(data))
                if TOTALS.seq_violations != seq_before or TOTALS.throttle_violations != throttle_before:
                    self._report_violations(seq_before, throttle_before)
            elif kind == "reset":
                check.reset(message["symbol"])
            elif kind == "pong":
                sent = self.pings.pop(message.get("id"), None)
                if sent is not None:
                    record(fire, "ping", (time.perf_counter() - sent) * 1000, len(data))
            elif kind == "error":
                TOTALS.errors += 1
                record(
                    fire, "error frame", 0, len(data), RuntimeError(f"{message.get('code')}: {message.get('message')}")
                )

    def _report_violations(self, seq_before: int, throttle_before: int) -> None:
        fire = self.environment.events.request.fire
        detail = "; ".join(self.check.violations[-3:])
        for _ in range(TOTALS.seq_violations - seq_before):
            record(fire, "seq violation", 0, 0, SeqViolation(detail))
        for _ in range(TOTALS.throttle_violations - throttle_before):
            record(fire, "throttle violation", 0, 0, ThrottleViolation(detail))
        self.check.violations.clear()

    def _close(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                ws.close(timeout=1)
            except Exception:
                ws.shutdown()


# -- counters across processes, and where they are shown ---------------------------

SUMMARY = Totals()  # on the master (or a local runner): everything reported so far


@events.report_to_master.add_listener
def _report_to_master(client_id: str, data: dict[str, Any]) -> None:
    data["marketstream"] = TOTALS.as_dict()
    TOTALS.__init__()  # type: ignore[misc]  # send deltas


@events.worker_report.add_listener
def _worker_report(client_id: str, data: dict[str, Any]) -> None:
    if "marketstream" in data:
        SUMMARY.merge(data["marketstream"])


def summary(environment: Environment) -> dict[str, Any]:
    """The counters of the whole test (all workers), with per-tick latency percentiles in ms."""
    totals = Totals()
    totals.merge(SUMMARY.as_dict())
    if not isinstance(environment.runner, MasterRunner):
        totals.merge(TOTALS.as_dict())
    data = totals.as_dict()
    hist = data.pop("hist")
    data["latency_ms"] = {f"p{p:g}": v / 1000 for p, v in percentiles(hist, (50, 90, 99)).items()}
    data["latency_ms"]["max"] = data.pop("max_us") / 1000
    return data


@events.init.add_listener
def _on_init(environment: Environment, **kwargs: Any) -> None:
    web_ui = environment.web_ui
    if web_ui is not None and web_ui.app is not None and not isinstance(environment.runner, WorkerRunner):
        web_ui.app.add_url_rule("/marketstream", "marketstream", lambda: summary(environment))


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **kwargs: Any) -> None:
    if not isinstance(environment.runner, WorkerRunner):
        _write_summary(environment)


@events.quitting.add_listener
def _on_quitting(environment: Environment, **kwargs: Any) -> None:
    if not isinstance(environment.runner, WorkerRunner):
        _write_summary(environment)


def _write_summary(environment: Environment) -> None:
    data = summary(environment)
    log.info("marketstream: %s", json.dumps(data))
    prefix = getattr(environment.parsed_options, "csv_prefix", None) if environment.parsed_options else None
    if prefix:
        with open(f"{prefix}_ticks.json", "w") as out:
            json.dump(data, out, indent=1)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **kwargs: Any) -> None:
    TOTALS.__init__()  # type: ignore[misc]
    SUMMARY.__init__()  # type: ignore[misc]
