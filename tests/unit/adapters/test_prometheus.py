"""The metrics adapters' sync: Prometheus values follow the core's plain counters, once
each, whatever the number of syncs; connections that close keep their counts; labels are
shown from the start; dead workers' live gauges are reaped. No I/O but temporary files."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from marketstream.adapters.feed_metrics import FeedMetrics
from marketstream.adapters.prometheus import HubMetrics, Synced, reap
from marketstream.adapters.shard_health import ShardHealth
from marketstream.core.closes import Close
from marketstream.core.codec import CODEC
from marketstream.core.connection import Connection
from marketstream.core.hub import Hub
from marketstream.core.requests import parse
from marketstream.core.stats import PublishStats
from marketstream.core.store import MemoryStore
from marketstream.core.tick import EncodedTick
from tests.unit.core.fakes import Clock, FakeTransport, Peer, draft, settle

SYMBOLS = ["AAPL", "MSFT"]


class Rig:
    """A hub with a fake transport, and its metrics (one process: its own registry)."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore()
        self.transport = FakeTransport(self.store)
        self.hub = Hub(self.store, self.transport, clock=self.clock)
        self.admissions = {"admitted": 0, "refused": 0}
        self.shards = [ShardHealth(0, "redis-a"), ShardHealth(1, "redis-b")]
        self.metrics = HubMetrics(self.hub, self.admissions, lambda: 3, self.shards, ("accepted", "refused_x"))

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    def connect(self) -> tuple[Connection, Peer, list[int]]:
        """A connection whose socket always takes data; the sizes of the frames it sent."""
        peer = Peer(writable=True)
        sizes: list[int] = []

        async def send(frame: bytes) -> None:
            sizes.append(len(frame))
            await peer.send(frame)

        conn = self.hub.connect(CODEC["msgpack"], send, peer.closer, peer.writable)
        return conn, peer, sizes

    async def subscribe(self, conn: Connection, throttle: int = 0) -> None:
        await self.hub.handle(conn, parse({"op": "subscribe", "symbols": SYMBOLS, "throttle_ms": throttle}))
        await settle()

    async def feed(self, symbol: str, n: int) -> list[EncodedTick]:
        ticks = await self.transport.publish([draft(symbol, float(i)) for i in range(n)])
        for x in ticks:
            self.hub.on_tick(x)
        await settle()
        return ticks


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    await r.store.register(SYMBOLS)
    await r.hub.start()
    yield r
    await r.hub.stop()


def test_synced_adds_the_growth_once_and_ignores_a_total_that_went_down() -> None:
    registry = CollectorRegistry()
    synced = Synced(Counter("things", "things", ["kind"], registry=registry))
    synced.to(0, "a")
    assert registry.get_sample_value("things_total", {"kind": "a"}) == 0, "a new label is shown at 0"
    synced.to(5, "a")
    synced.to(5, "a")
    synced.to(7, "a")
    assert registry.get_sample_value("things_total", {"kind": "a"}) == 7
    synced.to(2, "a")  # not a counter's behaviour: ignored until it is above 7 again
    synced.to(9, "a")
    assert registry.get_sample_value("things_total", {"kind": "a"}) == 9


async def test_sync_follows_what_connections_sent_and_keeps_it_after_they_close(rig: Rig) -> None:
    conn, peer, sizes = rig.connect()
    await rig.subscribe(conn)
    await rig.feed("AAPL", 5)
    await rig.feed("MSFT", 3)
    rig.metrics.sync()
    rig.metrics.sync()  # a second sync adds nothing
    sent_ticks = sum(len(f["ticks"]) for f in peer.frames if f["type"] == "ticks")
    assert sent_ticks == 8
    assert rig.value("marketstream_ticks_received_total") == 8
    assert rig.value("marketstream_ticks_sent_total") == sent_ticks
    assert rig.value("marketstream_frames_sent_total") == len(peer.frames) == len(sizes)
    assert rig.value("marketstream_bytes_sent_total") == sum(sizes)
    assert rig.value("marketstream_connections") == 1
    assert rig.value("marketstream_subscriptions") == 2
    assert rig.value("marketstream_symbols_joined") == 2

    rig.hub.detach(conn)
    await rig.feed("AAPL", 2)  # nobody to deliver to
    rig.metrics.sync()
    assert rig.value("marketstream_connections") == 0
    assert rig.value("marketstream_ticks_sent_total") == sent_ticks, "a closed connection's counts stay"
    assert rig.value("marketstream_frames_sent_total") == len(sizes)
    assert rig.value("marketstream_bytes_sent_total") == sum(sizes)
    assert rig.value("marketstream_ticks_received_total") == 10, "received counts what the transport handed over"


async def test_conflated_ticks_are_counted_once_as_the_frames_carry_them(rig: Rig) -> None:
    conn, peer, _ = rig.connect()
    await rig.subscribe(conn, throttle=10_000)
    rig.hub.throttle.fire(rig.hub.throttle.intervals[10_000])  # the subscription joins its bucket
    await rig.feed("AAPL", 1)
    rig.clock.now += 11
    rig.hub.throttle.fire(rig.hub.throttle.intervals[10_000])
    await settle()
    await rig.feed("AAPL", 6)  # five of them are superseded by the sixth
    rig.clock.now += 11
    rig.hub.throttle.fire(rig.hub.throttle.intervals[10_000])
    await settle()
    carried = sum(t.get("conflated", 0) for f in peer.frames if f["type"] == "ticks" for t in f["ticks"])
    assert carried == 5
    rig.metrics.sync()
    assert rig.value("marketstream_ticks_conflated_total") == carried
    rig.hub.detach(conn)
    rig.metrics.sync()
    assert rig.value("marketstream_ticks_conflated_total") == carried


async def test_about_one_connection_flushed_in_sample_every_has_its_latency_observed(rig: Rig) -> None:
    rig.hub.stats.sample_every = rig.hub.stats.sample_countdown = 3
    conns = [rig.connect() for _ in range(2)]
    for conn, _, _ in conns:
        await rig.subscribe(conn)
    for _ in range(6):  # each tick: one flush, one frame to each of the two connections
        await rig.feed("AAPL", 1)
    frames = sum(1 for _, peer, _ in conns for f in peer.frames if f["type"] == "ticks")
    assert frames == 12
    rig.metrics.sync()
    assert rig.value("marketstream_tick_latency_seconds_count") == 4, "12 frames, one in 3"
    assert rig.hub.stats.latency_ns == [], "the samples were taken by the sync"
    rig.metrics.sync()
    assert rig.value("marketstream_tick_latency_seconds_count") == 4


async def test_a_large_flush_takes_several_samples(rig: Rig) -> None:
    rig.hub.stats.sample_every = rig.hub.stats.sample_countdown = 2
    conns = [rig.connect() for _ in range(10)]
    for conn, _, _ in conns:
        await rig.subscribe(conn)
    await rig.feed("AAPL", 1)  # one flush of ten frames
    assert len(rig.hub.stats.latency_ns) == 5


async def test_labelled_families_are_shown_from_the_start_and_follow_their_counts(rig: Rig) -> None:
    rig.metrics.sync()
    for code in (1000, 1008, 1009, 1011, 1012, 1013, 4001, 4003):
        assert rig.value("marketstream_closes_total", code=str(code)) == 0
    assert rig.value("marketstream_closes_total", code="1001") is None, "the peer leaving is not a close"
    assert rig.value("marketstream_recoveries_refused_total", reason="too_old") == 0
    assert rig.value("marketstream_handshakes_total", outcome="refused_x") == 0
    assert rig.value("marketstream_shard_up", shard="1") == 1
    stats = rig.hub.stats
    stats.closes[Close.TRY_AGAIN_LATER] += 2
    stats.closes[Close.GOING_AWAY] += 5
    stats.rejected["bad_request"] += 3
    stats.rejected["something_new"] += 1
    stats.handshakes["accepted"] += 4
    rig.hub.history.stats.refused_by["epoch"] += 1
    rig.admissions["refused"] += 6
    rig.shards[1].up = False
    rig.shards[1].errors = 2
    rig.metrics.sync()
    assert rig.value("marketstream_closes_total", code="1013") == 2
    assert rig.value("marketstream_requests_rejected_total", code="bad_request") == 3
    assert rig.value("marketstream_requests_rejected_total", code="other") == 1, "unknown codes stay bounded"
    assert rig.value("marketstream_requests_rejected_total", code="something_new") is None
    assert rig.value("marketstream_handshakes_total", outcome="accepted") == 4
    assert rig.value("marketstream_recoveries_refused_total", reason="epoch") == 1
    assert rig.value("marketstream_admissions_total", outcome="refused") == 6
    assert rig.value("marketstream_grants") == 3
    assert rig.value("marketstream_shard_up", shard="1") == 0
    assert rig.value("marketstream_shard_errors_total", shard="1") == 2
    assert b"marketstream_tick_latency_seconds_bucket" in rig.metrics.render()


def test_reap_removes_the_live_gauges_of_dead_processes_only(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, live = int(gone.stdout), 1  # pid 1 always exists
    for name in (
        f"gauge_livesum_{dead}.db",
        f"gauge_livemin_{dead}.db",
        f"counter_{dead}.db",
        f"gauge_livesum_{live}.db",
    ):
        (tmp_path / name).write_bytes(b"")
    assert reap(str(tmp_path)) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"counter_{dead}.db", f"gauge_livesum_{live}.db"]


def test_feed_metrics_follow_the_publisher_and_the_shards() -> None:
    stats = PublishStats()
    shards = [ShardHealth(0, "a")]
    metrics = FeedMetrics(stats, shards)
    value = metrics.registry.get_sample_value
    stats.published(10, 0.002)
    stats.published(5, 0.004)
    stats.lag_s = 0.25
    shards[0].up = False
    shards[0].dropped_total = 7
    metrics.sync()
    metrics.sync()
    assert value("marketstream_feed_ticks_published_total") == 15
    assert value("marketstream_feed_publish_seconds_count") == 2
    assert value("marketstream_feed_publish_seconds_sum") == pytest.approx(0.006)
    assert value("marketstream_feed_lag_seconds") == 0.25
    assert value("marketstream_feed_shard_up", {"shard": "0"}) == 0
    assert value("marketstream_feed_ticks_dropped_total", {"shard": "0"}) == 7
