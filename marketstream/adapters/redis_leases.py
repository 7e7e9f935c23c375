"""Connection leases in Redis (`marketstream.core.leases`), shared by every hub with one prefix.

Redis layout under the key prefix P: ``P:leases:KEY`` is a sorted set member -> expiry in
milliseconds of Redis's clock. Every expiry is computed inside Lua from ``TIME``, never
from a hub's clock, so hubs on hosts whose clocks disagree count the same leases. A set
expires (PEXPIRE) 2 x ttl after its last acquire or renewal, so keys nobody uses vanish.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from redis import asyncio as aioredis

# KEYS[1] the set; ARGV[1] ttl in ms, ARGV[2] limit, ARGV[3] member. 1 when taken, 0 at the limit.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
  return 1
end
return 0
"""

# KEYS[1] the set; ARGV[1] ttl in ms, ARGV[2..] members: all of them expire ttl from now.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return #ARGV - 1
"""

# KEYS[1] the set: how many of its leases expire after now.
COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""


class RedisLeases:
    """`Leases` in Redis. The client is the caller's: this object never closes it."""

    def __init__(self, client: aioredis.Redis, prefix: str, ttl: float = 30.0) -> None:
        if not ttl > 0:
            raise ValueError(f"lease ttl must be a positive number of seconds, got {ttl!r}")
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self._ttl_ms = max(1, round(ttl * 1000))
        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(RENEW)
        self._count = client.register_script(COUNT)

    def key_of(self, key: str) -> str:
        return f"{self.prefix}:leases:{key}"

    async def acquire(self, key: str, member: str, limit: int) -> bool:
        return bool(await self._acquire(keys=[self.key_of(key)], args=[self._ttl_ms, limit, member]))

    async def renew(self, held: Mapping[str, Collection[str]]) -> None:
        """`Leases.renew`: one script call per key, all in one pipeline (not a transaction:
        each call is atomic on its own, which is all a renewal needs)."""
        held = {k: members for k, members in held.items() if members}
        if not held:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for key, members in held.items():
                await self._renew(keys=[self.key_of(key)], args=[self._ttl_ms, *members], client=pipe)
            await pipe.execute()

    async def release(self, key: str, member: str) -> None:
        await self.client.zrem(self.key_of(key), member)

    async def count(self, key: str) -> int:
        return int(await self._count(keys=[self.key_of(key)]))

    async def close(self) -> None:
        """Nothing: the client belongs to whoever passed it in, and closes it."""
