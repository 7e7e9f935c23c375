"""The Redis store: seq authority, snapshots, history and catalog, shared by every hub and feed with one prefix.

Redis layout under the key prefix P (``MARKETSTREAM_PREFIX``):

- ``P:catalog``        set of the symbols the hub knows;
- ``P:seq``            hash symbol -> its last seq: the seq authority (publish.lua), so
  seq survives restarts of feeds and hubs and is shared by every publisher;
- ``P:epoch``          hash symbol -> its epoch, new whenever its seq was lost;
- ``P:snapshot``       hash symbol -> its last tick (msgpack);
- ``P:history:SYMBOL`` stream of its last ticks, entry id ``SEQ-0``, fields ``m`` (msgpack)
  and ``j`` (JSON): read back without parsing (a reconnect storm reads a lot of it).

Every write goes through publish.lua: one atomic step per batch of ticks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import msgpack
from redis import asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from marketstream.core.store import MAX_HISTORY_READ, History, new_epoch
from marketstream.core.tick import Draft, EncodedTick

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
        # a pooled connection that died with a network blip fails once: retry on a new one
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        retry_on_error=[redis_errors.ConnectionError, redis_errors.TimeoutError],
    )
    return aioredis.Redis(connection_pool=pool)


def _decode(raw: bytes, epoch: str = "") -> EncodedTick | None:
    """A stored tick, or None (logged) when the entry is not a tick."""
    try:
        return EncodedTick.encode(msgpack.unpackb(raw, raw=False), epoch)
    except Exception:
        log.error("store: ignoring an entry that is not a tick: %r", raw[:80])
        return None


def _entry(symbol: str, entry_id: bytes, fields: dict[bytes, bytes], epoch: str) -> EncodedTick | None:
    """A history entry as a tick: its bytes as publish.lua wrote them (no parsing), or
    decoded and encoded again for an entry without JSON."""
    packed, json = fields.get(b"m"), fields.get(b"j")
    if packed is not None and json is not None:
        return EncodedTick(symbol, int(entry_id.split(b"-")[0]), packed, json, epoch)
    return _decode(packed, epoch) if packed is not None else None


def _text(raw: bytes | None) -> str:
    return raw.decode() if raw else ""


PUBLISH_SCRIPT = resources.files("marketstream.adapters").joinpath("publish.lua").read_text()


class RedisStore:
    """Seq authority, snapshots, history and catalog in Redis, shared by every hub and
    feed with the same prefix. `history_length` ticks of history are kept per symbol
    (approximately: Redis trims streams in whole nodes, so a little more)."""

    def __init__(self, redis: aioredis.Redis, prefix: str, history_length: int = 2000) -> None:
        self.redis = redis
        self.history_length = history_length
        self.catalog_key = f"{prefix}:catalog"
        self.seq_key = f"{prefix}:seq"
        self.epoch_key = f"{prefix}:epoch"
        self.snapshot_key = f"{prefix}:snapshot"
        self.history_prefix = f"{prefix}:history:"
        self._publish = redis.register_script(PUBLISH_SCRIPT)

    def history_key(self, symbol: str) -> str:
        return self.history_prefix + symbol

    async def register(self, symbols: Iterable[str]) -> None:
        symbols = list(symbols)
        if symbols:
            await self.redis.sadd(self.catalog_key, *symbols)

    async def known(self, symbols: Sequence[str]) -> list[bool]:
        if not symbols:
            return []
        return [bool(x) for x in await self.redis.smismember(self.catalog_key, list(symbols))]

    async def append(self, drafts: Sequence[Draft], channels: Sequence[str] | None = None) -> list[EncodedTick]:
        """`Store.append`; with `channels` (one per draft) publish.lua also PUBLISHes each
        tick's channel-layer message there, in the same atomic step."""
        if not drafts:
            return []
        keys = [self.seq_key, self.epoch_key, self.snapshot_key, self.catalog_key]
        keys += [self.history_key(d.symbol) for d in drafts]
        args: list[Any] = [self.history_length, new_epoch()]
        for i, draft in enumerate(drafts):
            args += [draft.symbol, draft.msgpack_head, draft.json_head, channels[i] if channels else ""]
        result = await self._publish(keys=keys, args=args)
        return [d.complete(int(result[2 * i]), _text(result[2 * i + 1])) for i, d in enumerate(drafts)]

    async def snapshots(self, symbols: Sequence[str]) -> dict[str, EncodedTick]:
        if not symbols:
            return {}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(self.snapshot_key, list(symbols))
            pipe.hmget(self.epoch_key, list(symbols))
            raws, epochs = await pipe.execute()
        found = (
            (s, _decode(raw, _text(e))) for s, raw, e in zip(symbols, raws, epochs, strict=True) if raw is not None
        )
        return {s: tick for s, tick in found if tick is not None}

    async def history(self, symbol: str, after_seq: int | None, limit: int) -> History:
        limit = min(limit, MAX_HISTORY_READ)
        async with self.redis.pipeline(transaction=True) as pipe:
            self._queue_history(pipe, symbol, after_seq, limit)
            replies = await pipe.execute()
        return self._history(symbol, replies, newest_first=after_seq is None)

    async def tails(self, after: Mapping[str, int], limit: int) -> dict[str, History]:
        if not after:
            return {}
        limit = min(limit, MAX_HISTORY_READ)
        async with self.redis.pipeline(transaction=True) as pipe:
            for symbol, seq in after.items():
                self._queue_history(pipe, symbol, None, limit, newer_than=seq)
            replies = await pipe.execute()
        return {s: self._history(s, replies[4 * i : 4 * i + 4], newest_first=True) for i, s in enumerate(after)}

    def _queue_history(
        self, pipe: Any, symbol: str, after_seq: int | None, limit: int, newer_than: int | None = None
    ) -> None:
        """Four commands: epoch, seq, the oldest entry, and the entries asked for: the
        first `limit` after `after_seq`, or else the last `limit` (newest first, none at or
        below `newer_than`)."""
        key = self.history_key(symbol)
        pipe.hget(self.epoch_key, symbol)
        pipe.hget(self.seq_key, symbol)
        pipe.xrange(key, "-", "+", count=1)
        if limit <= 0:
            pipe.xrange(key, "+", "+")  # ids above the last one: none
        elif after_seq is not None:
            pipe.xrange(key, f"({max(0, after_seq)}-0", "+", count=limit)
        else:
            pipe.xrevrange(key, "+", f"({max(0, newer_than)}-0" if newer_than else "-", count=limit)

    @staticmethod
    def _history(symbol: str, replies: list[Any], newest_first: bool) -> History:
        epoch, seq, first, entries = replies
        epoch_text = _text(epoch)
        if newest_first:
            entries = entries[::-1]
        ticks = [_entry(symbol, entry_id, fields, epoch_text) for entry_id, fields in entries]
        first_seq = int(first[0][0].split(b"-")[0]) if first else 0
        return History(epoch_text, first_seq, int(seq) if seq else 0, [t for t in ticks if t is not None])

    async def catalog(self) -> dict[str, EncodedTick | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(self.catalog_key)
            pipe.hgetall(self.snapshot_key)
            pipe.hgetall(self.epoch_key)
            members, snaps, epochs = await pipe.execute()
        last = {k.decode(): _decode(v, _text(epochs.get(k))) for k, v in snaps.items()}
        return {s: last.get(s) for s in sorted(m.decode() for m in members)}

    async def ping(self) -> None:
        await self.redis.ping()
