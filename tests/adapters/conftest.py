"""Adapters against the real Redis on 127.0.0.1:6379, each test under a prefix of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis
from redis import asyncio as aioredis

from marketstream.adapters.redis_store import RedisStore, connect

REDIS_URL = "redis://127.0.0.1:6379/0"
START_REDIS = 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no'


@pytest.fixture(scope="session", autouse=True)
def redis_is_up() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not answering on 127.0.0.1:6379 ({exc}). Start it with:\n  {START_REDIS}")


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


async def _store(prefix: str, history_length: int) -> AsyncIterator[RedisStore]:
    client: aioredis.Redis = connect(REDIS_URL)
    yield RedisStore(client, prefix, history_length)
    keys = [k async for k in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisStore]:
    async for s in _store(prefix, 2000):
        yield s


@pytest.fixture
async def redis_store_short(prefix: str) -> AsyncIterator[RedisStore]:
    """A store that keeps about 100 ticks of history per symbol."""
    async for s in _store(prefix, 100):
        yield s
