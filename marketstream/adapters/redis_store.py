"""The Redis store: snapshots and catalog shared by every hub and feed with one prefix.

Redis layout under the key prefix P (``MARKETSTREAM_PREFIX``):

- ``P:catalog``  set of the symbols the hub knows;
- ``P:snapshot`` hash symbol -> the symbol's last tick (msgpack). Its seq is where a
  restarted feed continues, so seq survives restarts of feeds and hubs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack
from redis import asyncio as aioredis

from marketstream.core.tick import EncodedTick

log = logging.getLogger(__name__)


def connect(url: str) -> aioredis.Redis:
    """A Redis client for the store (snapshots, catalog): a blocking pool and a 5 s
    socket timeout (the channel layer has its own client, without one)."""
    # A blocking pool: a burst of requests waits for a free connection instead of failing
    # with MaxConnectionsError (redis-py's default pool raises at its limit).
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=64,
        timeout=5,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=10,
    )
    return aioredis.Redis(connection_pool=pool)


def _decode(raw: bytes) -> EncodedTick | None:
    """A stored snapshot, or None (logged) when the entry is not a tick."""
    try:
        return EncodedTick.encode(msgpack.unpackb(raw, raw=False))
    except Exception:
        log.error("store: ignoring a snapshot entry that is not a tick: %r", raw[:80])
        return None


class RedisStore:
    """Snapshots and catalog in Redis, shared by every hub and feed with the same prefix."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.catalog_key = f"{prefix}:catalog"
        self.snapshot_key = f"{prefix}:snapshot"

    async def register(self, symbols: Iterable[str]) -> None:
        symbols = list(symbols)
        if symbols:
            await self.redis.sadd(self.catalog_key, *symbols)

    async def known(self, symbols: Sequence[str]) -> list[bool]:
        if not symbols:
            return []
        return [bool(x) for x in await self.redis.smismember(self.catalog_key, list(symbols))]

    def queue_save(self, pipe: Any, ticks: Sequence[EncodedTick]) -> None:
        """Add `save`'s commands to a pipeline (the publisher's MULTI)."""
        # the catalog again with every batch: a Redis that lost its data gets it back
        pipe.sadd(self.catalog_key, *{t.symbol for t in ticks})
        pipe.hset(self.snapshot_key, mapping={t.symbol: t.msgpack for t in ticks})

    async def save(self, ticks: Sequence[EncodedTick]) -> None:
        if ticks:
            async with self.redis.pipeline(transaction=True) as pipe:
                self.queue_save(pipe, ticks)
                await pipe.execute()

    async def snapshots(self, symbols: Sequence[str]) -> dict[str, EncodedTick]:
        if not symbols:
            return {}
        raws: list[bytes | None] = await self.redis.hmget(self.snapshot_key, list(symbols))  # type: ignore[assignment]
        found = ((s, _decode(raw)) for s, raw in zip(symbols, raws, strict=True) if raw is not None)
        return {s: tick for s, tick in found if tick is not None}

    async def catalog(self) -> dict[str, EncodedTick | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(self.catalog_key)
            pipe.hgetall(self.snapshot_key)
            members, snaps = await pipe.execute()
        last = {k.decode(): _decode(v) for k, v in snaps.items()}
        return {s: last.get(s) for s in sorted(m.decode() for m in members)}

    async def ping(self) -> None:
        await self.redis.ping()
