"""Prometheus metrics of a hub process, synced from the core's plain counters.

Contracts:

- The tick path never touches Prometheus. The core counts in plain integers (`Stats`,
  each `Connection`, each `Outbox`, `RecoveryStats`); `HubMetrics.sync` reads them and
  adds their growth since the last sync to Prometheus counters, sets the gauges, and
  observes the latency samples the core took. It runs every `interval` seconds (`run`,
  MARKETSTREAM_METRICS_SYNC_S), before each scrape (`render`), and once more at
  shutdown (`close`): a scrape sees the scraped process exactly, and the other workers
  of its host as of at most `interval` seconds ago.
- Several processes on one host (`serve --workers N`): with PROMETHEUS_MULTIPROC_DIR
  set, prometheus-client keeps each process's values in files in that directory, and
  `render` (in any worker) answers for all of them: counters and histograms summed over
  every process that ever ran since the directory was made (totals never go back when a
  worker is replaced), gauges summed over the live ones (`livesum`), except
  `marketstream_shard_up`: the least over live workers (`livemin`: 0 when any worker sees
  the shard down). The live gauges of workers that are gone are removed at each scrape
  (`reap`). Without the variable, one process, one registry.
- Label sets are bounded: close codes of `Close`, error codes of PROTOCOL.md (others
  count as `other`), the refusal reasons of `core.recovery`, the handshake outcomes the
  edge passes in, shard indexes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from marketstream.adapters.shard_health import ShardHealth
from marketstream.core.closes import Close
from marketstream.core.hub import Hub
from marketstream.core.recovery import REFUSALS

log = logging.getLogger(__name__)

# no `*_created` series: multiprocess mode has none, so one process and several answer alike
# (and a text-format parser takes them for gauges of their own). Process-wide, for metrics made after.
disable_created_metrics()

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# feed `ts` to send, seconds: from well under a millisecond (same host) to a slow client's seconds
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ERROR_CODES = ("bad_request", "unknown_op", "rate_limited", "internal_error")  # PROTOCOL.md's `error` codes
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db")


def multiproc_dir() -> str | None:
    """The multiprocess directory, when this process writes its values there."""
    return os.environ.get(MULTIPROC_ENV) or None


def alive(pid: int) -> bool:
    """Whether process `pid` exists (on this host)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap(directory: str, is_alive: Callable[[int], bool] = alive) -> list[int]:
    """Remove the live gauges of processes that are gone (`multiprocess.mark_process_dead`),
    so that `livesum` gauges count live workers only. Their counters stay. Returns the pids."""
    dead = set()
    for name in os.listdir(directory):
        found = _LIVE_GAUGE_FILE.fullmatch(name)
        if found and not is_alive(int(found.group(1))):
            dead.add(int(found.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, directory)
    return sorted(dead)


def render_directory(directory: str) -> bytes:
    """Prometheus text for every process of the multiprocess `directory`."""
    reap(directory)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, directory)
    return generate_latest(registry)


class Synced:
    """A Prometheus counter fed from plain totals that only grow: `to(total, *labels)`
    adds what the total grew by since the last call (a total that went down is ignored
    until it is above its last value again)."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.last: dict[tuple[str, ...], int] = {}

    def to(self, total: int, *labels: str) -> None:
        last = self.last.get(labels)
        if last is None:  # a new label value: shown from now on, at 0 until it grows
            last = self.last[labels] = 0
            if labels:
                self.counter.labels(*labels)
        if total > last:
            (self.counter.labels(*labels) if labels else self.counter).inc(total - last)
            self.last[labels] = total


@dataclass
class Totals:
    """A hub's counters summed over its live and its closed connections."""

    ticks_sent: int
    frames_sent: int
    bytes_sent: int
    ticks_conflated: int
    subscriptions: int
    outbox_ticks: int


def totals(hub: Hub) -> Totals:
    """Sum the per-connection counters (one pass over the connections: per sync, never per tick)."""
    stats = hub.stats
    ticks, frames, sent = stats.ticks_sent_closed, stats.frames_closed, stats.bytes_closed
    conflated = stats.conflated_closed
    subscriptions = pending = 0
    for conn in hub.connections:
        ticks += conn.ticks_sent
        frames += conn.frames
        sent += conn.bytes_sent
        conflated += conn.outbox.conflated
        subscriptions += len(conn.subscriptions)
        pending += len(conn.outbox)
    return Totals(ticks, frames, sent, conflated, subscriptions, pending)


class HubMetrics:
    """Every metric family of one hub process (docs/operations.md has the table).

    `admissions` is the gate's live count by outcome, `grants` how many grants the gate
    holds, `shards` the shard monitor's health list (None on the embedded default),
    `handshake_outcomes` the labels created at zero up front."""

    def __init__(
        self,
        hub: Hub,
        admissions: Mapping[str, int] | None = None,
        grants: Callable[[], int] | None = None,
        shards: Sequence[ShardHealth] | None = None,
        handshake_outcomes: Iterable[str] = ("accepted",),
        directory: str | None = None,
    ) -> None:
        self.hub = hub
        self.admissions = admissions
        self.grants = grants
        self.shards = shards
        self.directory = directory if directory is not None else multiproc_dir()
        self.registry = CollectorRegistry(auto_describe=True)
        # in multiprocess mode the values live in files; a registry would answer for this process only
        reg = None if self.directory else self.registry

        def gauge(name: str, text: str, labels: Sequence[str] = (), mode: str = "livesum") -> Gauge:
            return Gauge(name, text, labels, registry=reg, multiprocess_mode=mode)  # type: ignore[arg-type]

        def counter(name: str, text: str, labels: Sequence[str] = ()) -> Synced:
            return Synced(Counter(name, text, labels, registry=reg))

        self.connections = gauge("marketstream_connections", "Open WebSocket connections")
        self.subscriptions = gauge("marketstream_subscriptions", "Subscriptions over all connections")
        self.symbols_joined = gauge("marketstream_symbols_joined", "Symbols this hub receives")
        self.outbox_ticks = gauge("marketstream_outbox_ticks", "Ticks pending in outboxes")
        self.grants_held = gauge("marketstream_grants", "Key and session grants in the hubs' memory", mode="livemax")
        self.ticks_received = counter("marketstream_ticks_received", "Ticks received from the channel layer")
        self.ticks_sent = counter("marketstream_ticks_sent", "Ticks delivered to clients")
        self.frames_sent = counter("marketstream_frames_sent", "Frames sent to clients (ticks, snapshots, replies)")
        self.bytes_sent = counter("marketstream_bytes_sent", "Frame payload bytes sent to clients")
        self.ticks_conflated = counter(
            "marketstream_ticks_conflated", "Ticks superseded by conflation (throttle or slow client), never sent"
        )
        self.ticks_lost = counter("marketstream_ticks_lost", "Seqs the hub never received that history no longer held")
        self.ticks_filled = counter("marketstream_ticks_filled", "Ticks of gaps in what the hub received, from history")
        self.resets = counter("marketstream_resets", "New epochs seen: a symbol's seq restarted")
        self.recoveries_served = counter("marketstream_recoveries_served", "Symbols recovered from history (since)")
        self.recoveries_refused = counter(
            "marketstream_recoveries_refused", "Symbols answered recovered: false, by reason", ["reason"]
        )
        self.ticks_recovered = counter("marketstream_ticks_recovered", "Ticks delivered from history by recovery")
        self.history_reads = counter("marketstream_history_reads", "History round trips of recovery")
        self.recoveries_from_memory = counter(
            "marketstream_recoveries_from_memory", "Symbols recovered from ticks kept since an earlier read"
        )
        self.closes = counter("marketstream_closes", "Connections the hub closed, by close code", ["code"])
        self.rejected = counter("marketstream_requests_rejected", "Requests answered with an error, by code", ["code"])
        self.handshakes = counter("marketstream_handshakes", "WebSocket handshakes by outcome", ["outcome"])
        self.admitted = counter(
            "marketstream_admissions",
            "Gate decisions on handshakes and API requests by outcome, and connections closed by revocation",
            ["outcome"],
        )
        self.layer_errors = counter("marketstream_layer_errors", "Failed receives from the channel layer")
        self.shard_up = gauge(
            "marketstream_shard_up", "1 while the shard serves, as this hub sees it", ["shard"], "livemin"
        )
        self.shard_errors = counter("marketstream_shard_errors", "Failures seen talking to the shard", ["shard"])
        self.latency = Histogram(
            "marketstream_tick_latency_seconds",
            "Feed ts to send of sampled ticks (the first tick of one tick frame in N), seconds",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        for code in Close:  # every family and label shown from the start, at 0
            if code != Close.GOING_AWAY:
                self.closes.counter.labels(str(int(code)))
        for reason in REFUSALS:
            self.recoveries_refused.counter.labels(reason)
        for code_name in (*ERROR_CODES, "other"):
            self.rejected.counter.labels(code_name)
        for outcome in handshake_outcomes:
            self.handshakes.counter.labels(outcome)
        self._task: asyncio.Task[None] | None = None

    def sync(self) -> None:
        """Bring every metric up to the core's counters (see the module's contract)."""
        hub = self.hub
        stats = hub.stats
        now = totals(hub)
        self.connections.set(len(hub.connections))
        self.subscriptions.set(now.subscriptions)
        self.symbols_joined.set(len(hub.membership.joined))
        self.outbox_ticks.set(now.outbox_ticks)
        self.ticks_received.to(stats.ticks_received)
        self.ticks_sent.to(now.ticks_sent)
        self.frames_sent.to(now.frames_sent)
        self.bytes_sent.to(now.bytes_sent)
        self.ticks_conflated.to(now.ticks_conflated)
        self.ticks_lost.to(stats.ticks_lost)
        self.ticks_filled.to(stats.ticks_filled)
        self.resets.to(stats.resets)
        self.layer_errors.to(stats.transport_errors)
        history = hub.history.stats
        self.recoveries_served.to(history.served)
        for reason, n in history.refused_by.items():
            self.recoveries_refused.to(n, reason)
        self.ticks_recovered.to(history.ticks)
        self.history_reads.to(history.reads)
        self.recoveries_from_memory.to(history.from_memory)
        for code, n in stats.closes.items():
            if code != Close.GOING_AWAY:  # the peer left: not the hub's close
                self.closes.to(n, str(int(code)))
        other = 0
        for error, n in stats.rejected.items():
            if error in ERROR_CODES:
                self.rejected.to(n, error)
            else:
                other += n
        self.rejected.to(other, "other")
        for outcome, n in stats.handshakes.items():
            self.handshakes.to(n, outcome)
        if self.admissions is not None:
            for outcome, n in self.admissions.items():
                self.admitted.to(n, outcome)
        if self.grants is not None:
            self.grants_held.set(self.grants())
        for health in self.shards or ():
            self.shard_up.labels(str(health.index)).set(1 if health.up else 0)
            self.shard_errors.to(health.errors, str(health.index))
        samples, stats.latency_ns = stats.latency_ns, []
        for ns in samples:
            self.latency.observe(ns / 1e9)

    def render(self) -> bytes:
        """Prometheus text after a sync: of this process, or of every process of the
        multiprocess directory."""
        self.sync()
        if self.directory:
            return render_directory(self.directory)
        return generate_latest(self.registry)

    def start(self, interval: float) -> None:
        """Sync every `interval` seconds from now on (on the running loop), until `close`."""
        if self._task is None and interval > 0:
            self._task = asyncio.get_running_loop().create_task(self.run(interval), name="metrics-sync")

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.sync()
            except Exception:
                log.exception("metrics: sync failed")

    async def close(self) -> None:
        """Stop syncing, sync a last time; in multiprocess mode, leave the live gauges."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            self.sync()
        except Exception:
            log.exception("metrics: last sync failed")
        if self.directory:
            multiprocess.mark_process_dead(os.getpid(), self.directory)
