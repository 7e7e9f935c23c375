"""DirectScript (the feed's publish.lua calls) against the real Redis: one connection of
its own, NOSCRIPT, a connection lost while idle or mid-call, timeouts, error replies."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis import asyncio as aioredis
from redis import exceptions as redis_errors

from marketstream.adapters.direct_script import DirectScript
from marketstream.adapters.redis_store import connect
from tests.adapters.conftest import REDIS_URL

# INCRs its key, returns the new value and its first argument; errors on "fail"; sleeps
# (busy) `ARGV[2]` milliseconds when given
SCRIPT = """
if ARGV[1] == 'fail' then return redis.error_reply('ERR asked to fail') end
local ms = tonumber(ARGV[2] or '0')
if ms > 0 then
  local t = redis.call('TIME')
  local until_us = t[1] * 1000000 + t[2] + ms * 1000
  repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= until_us
end
return {redis.call('INCR', KEYS[1]), ARGV[1]}
"""


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    redis = connect(REDIS_URL)
    yield redis
    await redis.aclose()


@pytest.fixture
def key() -> str:
    return f"test-{uuid.uuid4().hex[:12]}:n"


async def client_id(conn_owner: DirectScript) -> int:
    assert conn_owner._conn is not None
    await conn_owner._conn.send_command("CLIENT", "ID")
    return int(await conn_owner._conn.read_response())


async def test_calls_return_the_reply_on_one_connection_kept(client: aioredis.Redis, key: str) -> None:
    script = DirectScript(client, SCRIPT)
    await client.script_flush()  # the first call meets NOSCRIPT and loads it
    assert await script([key], ["a", 0, 1.5]) == [1, b"a"]
    first = await client_id(script)
    assert await script([key], ["b"]) == [2, b"b"]
    assert await client_id(script) == first, "the same connection for every call"
    assert len(client.connection_pool._in_use_connections) == 1, "checked out of the pool and kept"
    await client.delete(key)


async def test_concurrent_calls_are_serialised(client: aioredis.Redis, key: str) -> None:
    script = DirectScript(client, SCRIPT)
    replies = await asyncio.gather(*(script([key], [str(i)]) for i in range(20)))
    assert sorted(r[0] for r in replies) == list(range(1, 21))
    assert [r[1] for r in replies] == [str(i).encode() for i in range(20)], "each call got its own reply"
    await client.delete(key)


async def test_an_error_reply_is_raised_and_the_connection_kept(client: aioredis.Redis, key: str) -> None:
    script = DirectScript(client, SCRIPT)
    await script([key], ["a"])
    first = await client_id(script)
    with pytest.raises(redis_errors.ResponseError, match="asked to fail"):
        await script([key], ["fail"])
    assert await script([key], ["c"]) == [2, b"c"]
    assert await client_id(script) == first
    await client.delete(key)


async def test_a_connection_killed_while_idle_is_replaced_and_the_call_made_once(
    client: aioredis.Redis, key: str
) -> None:
    script = DirectScript(client, SCRIPT)
    await script([key], ["a"])
    first = await client_id(script)
    assert await client.client_kill_filter(_id=str(first)) == 1
    await asyncio.sleep(0.05)
    assert await script([key], ["b"]) == [2, b"b"], "sent again on a new connection, and run once"
    assert await client_id(script) != first
    await client.delete(key)


async def test_a_call_without_a_reply_in_time_raises_and_drops_the_connection(client: aioredis.Redis, key: str) -> None:
    script = DirectScript(client, SCRIPT)
    await script([key], ["a"])
    first = await client_id(script)
    script.timeout = 0.1
    started = time.monotonic()
    with pytest.raises(redis_errors.TimeoutError):
        await script([key], ["slow", 400])  # Redis is busy 0.4 s
    assert time.monotonic() - started < 0.35
    assert script._conn is None, "a connection with a reply still coming is not used again"
    script.timeout = 5.0
    assert (await script([key], ["after"]))[1] == b"after", "the late reply is not taken for this one"
    assert await client_id(script) != first
    await client.delete(key)


async def test_a_cancelled_call_drops_the_connection(client: aioredis.Redis, key: str) -> None:
    script = DirectScript(client, SCRIPT)
    await script([key], ["a"])
    task = asyncio.get_running_loop().create_task(script([key], ["slow", 300]))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert script._conn is None
    assert (await script([key], ["after"]))[1] == b"after"
    await client.delete(key)


async def test_redis_down_raises_a_connection_error() -> None:
    redis = connect("redis://127.0.0.1:1/0")  # nothing listens on port 1
    script = DirectScript(redis, SCRIPT)
    with pytest.raises(redis_errors.ConnectionError):
        await script(["k"], ["a"])
    await redis.aclose()


async def test_disconnecting_the_pool_closes_the_connection(key: str) -> None:
    redis = connect(REDIS_URL)
    script = DirectScript(redis, SCRIPT)
    await script([key], ["a"])
    conn = script._conn
    assert conn is not None and conn.is_connected
    await redis.delete(key)
    await redis.connection_pool.disconnect()
    assert not conn.is_connected
    await redis.aclose()
