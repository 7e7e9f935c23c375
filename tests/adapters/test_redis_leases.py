"""RedisLeases on the real Redis: two hubs (two clients) share one key's limit, races,
expiry on Redis's clock, renewal, release and count."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis import asyncio as aioredis

from marketstream.adapters.redis_leases import RedisLeases
from marketstream.adapters.redis_store import connect
from marketstream.core.leases import Leases

from .conftest import REDIS_URL


@pytest.fixture
async def clients(prefix: str) -> AsyncIterator[tuple[aioredis.Redis, aioredis.Redis]]:
    """Two clients, one per "hub"; the prefix's keys are deleted afterwards."""
    a, b = connect(REDIS_URL), connect(REDIS_URL)
    yield a, b
    keys = [k async for k in a.scan_iter(f"{prefix}:*")]
    if keys:
        await a.delete(*keys)
    await a.aclose()
    await b.aclose()


@pytest.fixture
def hubs(clients: tuple[aioredis.Redis, aioredis.Redis], prefix: str) -> tuple[RedisLeases, RedisLeases]:
    return RedisLeases(clients[0], prefix), RedisLeases(clients[1], prefix)


@pytest.fixture
def short(clients: tuple[aioredis.Redis, aioredis.Redis], prefix: str) -> RedisLeases:
    return RedisLeases(clients[0], prefix, ttl=0.3)


async def test_two_hubs_share_one_limit(hubs: tuple[RedisLeases, RedisLeases]) -> None:
    a, b = hubs
    store: Leases = a  # mypy checks the protocol here
    assert await store.acquire("key1", "a:1", 3)
    assert await b.acquire("key1", "b:1", 3)
    assert await a.acquire("key1", "a:2", 3)
    assert not await b.acquire("key1", "b:2", 3)
    assert not await a.acquire("key1", "a:3", 3)
    assert await a.acquire("key1", "a:1", 3)  # again: holds one already, not counted twice
    assert await a.count("key1") == await b.count("key1") == 3
    assert await b.acquire("key2", "b:2", 3)  # keys count apart


async def test_racing_acquires_take_exactly_the_limit(hubs: tuple[RedisLeases, RedisLeases]) -> None:
    a, b = hubs
    results = await asyncio.gather(*(hub.acquire("k", f"h{i % 2}:{i}", 7) for i, hub in enumerate([a, b] * 25)))
    assert sum(results) == 7
    assert await a.count("k") == 7


async def test_release_frees_a_place(hubs: tuple[RedisLeases, RedisLeases]) -> None:
    a, b = hubs
    assert await a.acquire("k", "a:1", 1)
    assert not await b.acquire("k", "b:1", 1)
    await a.release("k", "a:1")
    await a.release("k", "a:1")  # twice: nothing
    assert await a.count("k") == 0
    assert await b.acquire("k", "b:1", 1)
    assert await a.count("k") == 1


async def test_a_lease_not_renewed_expires(short: RedisLeases, prefix: str) -> None:
    assert await short.acquire("k", "a:1", 1)
    assert not await short.acquire("k", "a:2", 1)
    await asyncio.sleep(0.45)
    assert await short.count("k") == 0
    assert await short.acquire("k", "a:2", 1)
    await asyncio.sleep(0.75)  # 2 x ttl without renewal: the set itself is gone
    assert await short.client.exists(short.key_of("k")) == 0


async def test_renew_keeps_leases_alive_and_takes_expired_ones_back(short: RedisLeases) -> None:
    assert await short.acquire("a", "h:1", 5)
    assert await short.acquire("b", "h:2", 5)
    for _ in range(6):  # 0.6 s, twice the ttl
        await asyncio.sleep(0.1)
        await short.renew({"a": ["h:1"], "b": {"h:2"}, "c": []})
    assert (await short.count("a"), await short.count("b"), await short.count("c")) == (1, 1, 0)
    await short.renew({})
    await asyncio.sleep(0.4)
    assert await short.count("a") == 0
    assert await short.acquire("a", "other:1", 1)
    await short.renew({"a": ["h:1"]})  # a hub back from a cut: over the limit for a while
    assert await short.count("a") == 2
    await short.close()
    assert await short.client.ping()  # close leaves the caller's client open
