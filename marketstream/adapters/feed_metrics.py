"""Prometheus metrics of a feed process (`manage.py runfeed --metrics-port P`).

Contract: like the hub's (marketstream/adapters/prometheus.py), the publisher only counts
in plain numbers (`PublishStats`, `ShardHealth`); `FeedMetrics.sync`, run before each
scrape, adds their growth to Prometheus counters, observes the publish durations taken
since, and sets the gauges. A feed is one process: one registry, no multiprocess mode.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from marketstream.adapters.prometheus import Synced
from marketstream.adapters.shard_health import ShardHealth
from marketstream.core.stats import PublishStats

# one publish round trip (a batch: stamp, seq, history, PUBLISH), seconds
PUBLISH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class FeedMetrics:
    """Every metric family of one feed process (docs/operations.md has the table).
    `shards` is the feed's shard monitor's health list (None without one)."""

    def __init__(self, stats: PublishStats, shards: Sequence[ShardHealth] | None = None) -> None:
        self.stats = stats
        self.shards = shards
        self.registry = reg = CollectorRegistry(auto_describe=True)
        self.published = Synced(Counter("marketstream_feed_ticks_published", "Ticks published", registry=reg))
        self.dropped = Synced(
            Counter(
                "marketstream_feed_ticks_dropped",
                "Ticks not published because their shard was down",
                ["shard"],
                registry=reg,
            )
        )
        self.publish = Histogram(
            "marketstream_feed_publish_seconds",
            "One publish round trip, seconds",
            buckets=PUBLISH_BUCKETS,
            registry=reg,
        )
        self.lag = Gauge(
            "marketstream_feed_lag_seconds", "How late the feed's last batch was against its schedule", registry=reg
        )
        self.shard_up = Gauge(
            "marketstream_feed_shard_up", "1 while the shard serves, as this feed sees it", ["shard"], registry=reg
        )
        for health in shards or ():
            self.dropped.to(0, str(health.index))

    def sync(self) -> None:
        stats = self.stats
        self.published.to(stats.ticks)
        samples, stats.publish_s = stats.publish_s, []
        for seconds in samples:
            self.publish.observe(seconds)
        self.lag.set(stats.lag_s)
        for health in self.shards or ():
            self.shard_up.labels(str(health.index)).set(1 if health.up else 0)
            self.dropped.to(health.dropped_total, str(health.index))

    def render(self) -> bytes:
        """Prometheus text after a sync."""
        self.sync()
        return generate_latest(self.registry)
