"""The process's shared objects, made from settings: the store, the hub, the embedded feed.

One hub and one store per event loop (uvicorn runs one loop per worker process; tests
may run several loops one after another).
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from redis import asyncio as aioredis

from marketstream.hub import Hub
from marketstream.store import MemoryStore, RedisStore, Store

log = logging.getLogger(__name__)

GROUP_PREFIX = "tick"

# keyed by event loop, forgotten with it
_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Store] = weakref.WeakKeyDictionary()
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()
_hub_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
_memory_store = MemoryStore()  # the embedded default's store: one per process


def config(name: str) -> Any:
    return settings.MARKETSTREAM[name]


def uses_hub() -> bool:
    """False when the seed baseline consumer is served (MARKETSTREAM_CONSUMER=seed)."""
    return bool(config("CONSUMER") != "seed")


def embedded() -> bool:
    """True on the embedded default (no REDIS_URL): in-memory layer, feed in the server."""
    return not settings.REDIS_URL


def redis_client() -> aioredis.Redis:
    """A new Redis client for REDIS_URL, for the store (snapshots, catalog): a blocking
    pool and a 5 s socket timeout (the channel layer has its own client, without one)."""
    # A blocking pool: a burst of requests waits for a free connection instead of failing
    # with MaxConnectionsError (redis-py's default pool raises at its limit).
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.REDIS_URL,
        max_connections=64,
        timeout=5,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=10,
    )
    return aioredis.Redis(connection_pool=pool)


def get_store() -> Store:
    if embedded():
        return _memory_store
    loop = asyncio.get_running_loop()
    store = _stores.get(loop)
    if store is None:
        store = _stores[loop] = RedisStore(redis_client(), config("PREFIX"))
    return store


async def get_hub() -> Hub:
    """The started hub of the running loop."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is not None:
        return hub
    lock = _hub_locks.setdefault(loop, asyncio.Lock())
    async with lock:
        hub = _hubs.get(loop)
        if hub is None:
            hub = Hub(
                get_channel_layer(),
                get_store(),
                GROUP_PREFIX,
                slow_client_timeout=config("SLOW_CLIENT_TIMEOUT"),
                flush_delay=config("FLUSH_MS") / 1000,
            )
            await hub.start()
            _hubs[loop] = hub
    return hub


def current_hub() -> Hub | None:
    """The hub of the running loop if one was started (for metrics and health)."""
    try:
        return _hubs.get(asyncio.get_running_loop())
    except RuntimeError:
        return None


class EmbeddedFeed:
    """The simulated feed inside the server process on the embedded default."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.task: asyncio.Task[int] | None = None

    async def start(self) -> None:
        from feeds.publisher import Publisher
        from feeds.runner import run_feed
        from feeds.simulated import SimulatedFeed
        from feeds.universe import DEFAULT_UNIVERSE

        raw_seed = os.environ.get("MARKETSTREAM_FEED_SEED", "").strip()
        seed = int(raw_seed) if raw_seed else None
        feed = SimulatedFeed(DEFAULT_UNIVERSE, seed=seed)
        publisher = Publisher(get_channel_layer(), get_store(), GROUP_PREFIX)
        rate = float(config("EMBEDDED_FEED_RATE"))
        ready = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(run_feed(feed, publisher, rate, self.stop, ready=ready))
        # serve once every symbol is in the catalog with a snapshot (or the feed failed)
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
