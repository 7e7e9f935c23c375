"""A Lua script called on a connection of its own: the feed's publish path (publish.lua).

A feed calls publish.lua once per batch, about a hundred times a second. Through
redis-py's command path each call also pays a pool checkout and release (with their
health, fork and metrics hooks), a retry wrapper, the command packed in Python, and a
task per socket write (`wait_for`, for the socket timeout). Measured in a feed of 500
ticks/s in batches of 5, 0.85 ms passed between the stamp of `ts` and the command
leaving, 0.5 ms of it in that path: more than a third of every tick's latency up to
Redis (docs/performance.md, "The feed's share of latency").

`DirectScript` checks one connection out of the client's pool and keeps it: each call
is packed by hiredis in one step, written, and its reply read, under one
`asyncio.timeout` (the pool's socket timeout) instead of one per read and write. The
pool still owns the connection: disconnecting the pool closes it too.

Contract: `await script(keys, args)` returns what `Script.__call__` would (the raw
reply; errors raised as redis-py's exceptions); calls are serialised (one in flight).
A NOSCRIPT reply loads the script and calls again. A connection that fails before the
command was sent (it died while idle: Redis restarted, say) is replaced and the call
tried once more; one that fails or times out after (the script may have run) is
dropped and the error raised: the caller decides (the feed publishes the batch again
a second later, or counts the shard down).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import hiredis
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection


class DirectScript:
    """`script`, called with EVALSHA on a connection checked out of `redis`'s pool."""

    def __init__(self, redis: Redis, script: str) -> None:
        self.pool = redis.connection_pool
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()
        timeout = self.pool.connection_kwargs.get("socket_timeout")
        self.timeout: float | None = float(timeout) if timeout else None
        self._conn: AbstractConnection | None = None
        self._lock = asyncio.Lock()

    async def __call__(self, keys: Sequence[str], args: Sequence[str | bytes | int | float]) -> Any:
        command = pack_command("EVALSHA", self.sha, len(keys), *keys, *args)
        async with self._lock:
            try:
                return await self._call(command)
            except _NotSent:  # the connection had died while idle: once more on a new one
                pass
            try:
                return await self._call(command)
            except _NotSent as exc:
                raise exc.__cause__ from None  # type: ignore[misc]

    async def _call(self, command: bytes) -> Any:
        sent = False
        try:
            conn = await self._connection()
            async with asyncio.timeout(self.timeout):
                await conn.send_packed_command(command, check_health=False)
                sent = True
                try:
                    return await conn.read_response()
                except redis_errors.NoScriptError:
                    await conn.send_packed_command(pack_command("SCRIPT", "LOAD", self.script), False)
                    await conn.read_response()
                    await conn.send_packed_command(command, check_health=False)
                    return await conn.read_response()
        except redis_errors.ResponseError:
            raise  # an error reply: the connection is fine
        except BaseException as exc:
            await self._drop()
            if isinstance(exc, TimeoutError):
                raise redis_errors.TimeoutError(f"no reply from Redis within {self.timeout} s") from exc
            if not sent and isinstance(exc, redis_errors.ConnectionError):
                raise _NotSent from exc
            raise

    async def _connection(self) -> AbstractConnection:
        """The connection, checked first: one the server closed while it was idle (its
        end of file was read meanwhile), or with bytes nobody asked for, is replaced. The
        check reads nothing from the socket (redis-py's `can_read`, 8.0 and later, looks at
        what the loop already received)."""
        if self._conn is not None and await self._conn.can_read():
            await self._drop()
        if self._conn is None:
            conn: AbstractConnection = await self.pool.get_connection()
            conn.socket_timeout = None  # this class bounds the whole call instead (restored in `_drop`)
            self._conn = conn
        return self._conn

    async def _drop(self) -> None:
        """Close the connection (its state is unknown) and give it back to the pool."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.socket_timeout = self.timeout
        await conn.disconnect(nowait=True)
        await self.pool.release(conn)


def pack_command(*parts: str | bytes | int | float) -> bytes:
    """A command in RESP, packed by hiredis in one call (also loadtest.feedlatency's)."""
    return hiredis.pack_command(parts)  # type: ignore[arg-type]  # its stub types the tuple as of one item


class _NotSent(Exception):
    """The connection failed before the command was written: safe to send again."""
