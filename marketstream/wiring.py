"""Wiring in one place: the layer, store, transport and hub of one server process, built
from settings in the ASGI lifespan and handed to consumers and views in the lifespan
state (`scope["state"]`). No module-level registries: whoever needs these gets them
passed in.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from dataclasses import dataclass
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from consumers.consumer import HANDSHAKE_OUTCOMES
from consumers.gate import Access, Gate, Listener
from consumers.grants import GrantBook
from feeds.ingest import Ingest
from feeds.publisher import Publisher
from feeds.runner import run_feed
from feeds.simulated import SimulatedFeed
from feeds.universe import DEFAULT_UNIVERSE
from marketstream.adapters import grant_notices, metrics_http
from marketstream.adapters.prometheus import HubMetrics
from marketstream.adapters.redis_leases import RedisLeases
from marketstream.adapters.sharded_store import ShardedStore
from marketstream.adapters.sharded_transport import Shards, open_shards
from marketstream.adapters.transport import transport_for
from marketstream.core.hub import Hub
from marketstream.core.leases import Leases, MemoryLeases
from marketstream.core.limits import Limits
from marketstream.core.store import MemoryStore, Store
from marketstream.core.transport import TickTransport

log = logging.getLogger(__name__)

HUB_START_TIMEOUT = 5.0  # seconds the lifespan and each handshake wait for the hub's transport


def embedded() -> bool:
    """True on the embedded default (no REDIS_URL): in-memory layer, feed in the server."""
    return not settings.REDIS_URL


def limits() -> Limits:
    """The default limits of a connection, from settings."""
    config = settings.MARKETSTREAM
    return Limits(
        max_subscriptions=config["MAX_SUBSCRIPTIONS"],
        max_message_bytes=config["MAX_MESSAGE_BYTES"],
        max_requests_per_s=config["MAX_REQUESTS_PER_S"],
        min_throttle_ms=config["MIN_THROTTLE_MS"],
        max_throttle_ms=config["MAX_THROTTLE_MS"],
        max_pending=config["MAX_PENDING"],
        max_recovery=min(config["MAX_RECOVERY"], config["HISTORY_MAXLEN"]),
    )


def make_shards(layer: Any, role: str) -> Shards:
    """The shards of REDIS_URL: store, health monitor and transport (not started)."""
    config = settings.MARKETSTREAM
    return open_shards(
        layer,
        settings.REDIS_SHARDS,
        config["PREFIX"],
        config["HISTORY_MAXLEN"],
        config["BARS_KEEP"],
        role,
        timeout=config["SHARD_TIMEOUT_S"],
        grace=config["SHARD_GRACE_S"],
    )


def make_gate(hub: Hub, store: Store) -> Gate:
    """The gate: grants from the database, connection leases in Redis (in memory on the
    embedded default), grant notices over Redis."""
    config = settings.MARKETSTREAM
    book = GrantBook(hub.limits, config["KEY_MAX_CONNECTIONS"], config["GRANTS_REFRESH_S"])
    leases: Leases
    listen: Listener | None = None
    if isinstance(store, ShardedStore):  # leases and grant notices on shard 0
        leases = RedisLeases(store.redis, config["PREFIX"], config["LEASE_TTL_S"])
        listen = functools.partial(grant_notices.listen, settings.REDIS_SHARDS[0].url, config["PREFIX"])
    else:
        leases = MemoryLeases(config["LEASE_TTL_S"])
    return Gate(hub, book, leases, Access.from_settings(book), listen)


@dataclass
class Services:
    """What one server process runs on. `feed` is the embedded feed, or None with Redis."""

    layer: Any
    store: Store
    transport: TickTransport
    hub: Hub
    gate: Gate
    ingest: Ingest
    metrics: HubMetrics
    feed: EmbeddedFeed | None = None
    shards: Shards | None = None  # with REDIS_URL
    metrics_listener: asyncio.Server | None = None  # the listener of MARKETSTREAM_METRICS_PORT

    @classmethod
    def build(cls) -> Services:
        """Build (without I/O) from settings, on the running event loop."""
        layer = get_channel_layer()
        config = settings.MARKETSTREAM
        store: Store
        transport: TickTransport
        shards: Shards | None = None
        if embedded():
            store = MemoryStore(config["HISTORY_MAXLEN"], config["BARS_KEEP"])
            transport = transport_for(layer, store)
        else:
            shards = make_shards(layer, "hub")
            store, transport = shards.store, shards.transport
        hub = Hub(
            store,
            transport,
            limits(),
            slow_client_timeout=config["SLOW_CLIENT_TIMEOUT"],
            flush_delay=config["FLUSH_MS"] / 1000,
            available=shards.monitor.available if shards is not None else None,
        )
        # one publisher per process: HTTP ingest's and, on the embedded default, the feed's
        publisher = Publisher(store, transport)
        ingest = Ingest(publisher, bars=config["BARS_KEEP"] > 0)
        feed = EmbeddedFeed(publisher) if embedded() else None
        gate = make_gate(hub, store)
        hub.stats.sample_every = hub.stats.sample_countdown = max(1, config["LATENCY_SAMPLE_EVERY"])
        metrics = HubMetrics(
            hub,
            gate.counts,
            lambda: len(gate.book.grants),
            shards.monitor.health if shards is not None else None,
            HANDSHAKE_OUTCOMES,
        )
        return cls(layer, store, transport, hub, gate, ingest, metrics, feed, shards)

    async def start(self) -> None:
        """Load the grants, start the embedded feed (its failure is raised), then the hub.
        A hub whose transport cannot be reached yet is logged and started by the next
        handshake. With REDIS_URL, the shards are checked first (a shard-count mismatch
        is raised; a shard that does not answer is down, served when it comes back)."""
        if self.shards is not None:
            monitor, layer = self.shards.monitor, self.layer._get_layer()
            monitor.layer_shards = lambda: layer.shards
            layer.watch(monitor.link)
            monitor.give_up = self.hub.end_unavailable
            await monitor.start()
        await self.gate.start()
        config = settings.MARKETSTREAM
        self.metrics.start(config["METRICS_SYNC_S"])
        if config["METRICS_PORT"]:
            host, port = config["METRICS_HOST"], config["METRICS_PORT"]
            self.metrics_listener = await metrics_http.serve(self.metrics.render, host, port)
            log.info("metrics on http://%s:%d/metrics", host, port)
        if self.feed is not None:
            await self.feed.start()
        try:
            await asyncio.wait_for(self.hub.start(), HUB_START_TIMEOUT)
        except Exception as exc:  # serve anyway: /healthz says 503 and each handshake retries
            log.error("the hub cannot reach its channel layer yet: %s", exc)

    async def stop(self) -> None:
        if self.metrics_listener is not None:
            self.metrics_listener.close()
        if self.feed is not None:
            await self.feed.close()
        await self.ingest.close()
        await self.gate.stop()
        await self.hub.stop()
        await self.metrics.close()  # after the hub: its last counts are in
        if self.shards is not None:
            await self.shards.monitor.stop()


class EmbeddedFeed:
    """The simulated feed inside the server process on the embedded default."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.stop = asyncio.Event()
        self.task: asyncio.Task[int] | None = None

    async def start(self) -> None:
        """Start publishing; return once every symbol is in the catalog with a snapshot.
        Raises why the feed stopped if it fails before that."""
        raw_seed = os.environ.get("MARKETSTREAM_FEED_SEED", "").strip()
        feed = SimulatedFeed(DEFAULT_UNIVERSE, seed=int(raw_seed) if raw_seed else None)
        rate = float(settings.MARKETSTREAM["EMBEDDED_FEED_RATE"])
        ready = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(
            run_feed(feed, self.publisher, rate, self.stop, ready=ready, bars=settings.MARKETSTREAM["BARS_KEEP"] > 0)
        )
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait([self.task, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self.task.done():
            self.task.result()  # raises why the feed stopped
        log.info("embedded feed: %d symbols at %.0f ticks/s (no REDIS_URL)", len(feed.instruments), rate)

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, 2.0)
            except (TimeoutError, Exception):
                self.task.cancel()
