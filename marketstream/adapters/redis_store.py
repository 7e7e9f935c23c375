"""The Redis store: seq authority, snapshots, history and catalog, shared by every hub and feed with one prefix.

Redis layout under the key prefix P (``MARKETSTREAM_PREFIX``):

- ``P:catalog``        set of the symbols the hub knows;
- ``P:info``           hash symbol -> what its publisher says of it, JSON ``{name, kind,
  reference}`` (the catalog's name, kind and reference price);
- ``P:seq``            hash symbol -> its last seq: the seq authority (publish.lua), so
  seq survives restarts of feeds and hubs and is shared by every publisher;
- ``P:epoch``          hash symbol -> its epoch, new whenever its seq was lost;
- ``P:snapshot``       hash symbol -> its last tick (msgpack);
- ``P:history:SYMBOL`` stream of its last ticks, entry id ``SEQ-0``, fields ``m`` (msgpack)
  and ``j`` (JSON): read back without parsing (a reconnect storm reads a lot of it);
- ``P:bar``            hash symbol -> its newest bar of each interval (bars.lua);
- ``P:bars:INTERVAL:SYMBOL`` list of its last final bars of that interval, oldest first,
  each a msgpack array [start (s), open, high, low, close, volume, count].

Every write but the catalog's (``register``, ``describe``) goes through publish.lua (one
atomic step per batch of ticks) or, for bars whose interval ended without a tick,
finalize.lua.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import msgpack
from redis import asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from marketstream.adapters.direct_script import DirectScript
from marketstream.core.bars import DEFAULT_KEEP, INTERVALS, NS, Bar
from marketstream.core.store import MAX_HISTORY_READ, History, new_epoch
from marketstream.core.symbols import SymbolInfo
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


def _script(name: str) -> str:
    return resources.files("marketstream.adapters").joinpath(name).read_text()


# bars.lua holds the bar rules both scripts apply: it is prepended to each
PUBLISH_SCRIPT = _script("bars.lua") + _script("publish.lua")
FINALIZE_SCRIPT = _script("bars.lua") + _script("finalize.lua")
FINALIZE_CHUNK = 500  # symbols per finalize.lua call: one call stays short


def _open_bars(symbol: str, raw: bytes | str | None) -> list[Bar]:
    """The bars of a bar state hash entry (bars.lua: 8 numbers per interval, start 0 for
    none), or none (logged) when it is not one."""
    if not isinstance(raw, bytes):
        return []
    try:
        state = msgpack.unpackb(raw, raw=False)
        found = []
        for k, name in enumerate(INTERVALS):
            start, o, h, lo, c, v, n, final = state[k * 8 : k * 8 + 8]
            if start:
                found.append(Bar(symbol, name, int(start), o, h, lo, c, v, int(n), final == 1))
        return found
    except Exception:
        log.error("store: ignoring bar state of %s that is not one: %r", symbol, raw[:80])
        return []


class RedisStore:
    """Seq authority, snapshots, history and catalog in Redis, shared by every hub and
    feed with the same prefix. `history_length` ticks of history are kept per symbol
    (approximately: Redis trims streams in whole nodes, so a little more)."""

    def __init__(
        self, redis: aioredis.Redis, prefix: str, history_length: int = 2000, bars_keep: int = DEFAULT_KEEP
    ) -> None:
        self.redis = redis
        self.history_length = history_length
        self.bars_keep = bars_keep
        self.catalog_key = f"{prefix}:catalog"
        self.info_key = f"{prefix}:info"
        self.seq_key = f"{prefix}:seq"
        self.epoch_key = f"{prefix}:epoch"
        self.snapshot_key = f"{prefix}:snapshot"
        self.history_prefix = f"{prefix}:history:"
        self.bar_key = f"{prefix}:bar"
        self.bars_prefix = f"{prefix}:bars:"
        self._publish = DirectScript(redis, PUBLISH_SCRIPT)  # once per batch: on a connection of its own
        self._finalize = redis.register_script(FINALIZE_SCRIPT)

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

    async def describe(self, infos: Mapping[str, SymbolInfo]) -> None:
        if infos:
            await self.redis.hset(self.info_key, mapping={s: json.dumps(i.as_dict()) for s, i in infos.items()})

    async def descriptions(self) -> dict[str, SymbolInfo]:
        found = {}
        for symbol, raw in (await self.redis.hgetall(self.info_key)).items():
            try:
                info = SymbolInfo.from_dict(json.loads(raw))
            except ValueError:
                info = None
            if info is None:
                log.error("store: ignoring a description of %r that is not one: %r", symbol, raw[:80])
            else:
                found[symbol.decode() if isinstance(symbol, bytes) else symbol] = info
        return found

    def bars_key(self, symbol: str, interval: str) -> str:
        return f"{self.bars_prefix}{interval}:{symbol}"

    async def append(
        self,
        drafts: Sequence[Draft],
        channels: Sequence[str] | None = None,
        bar_channels: Sequence[str] | None = None,
    ) -> list[EncodedTick]:
        """`Store.append`; with `channels` (one per draft) publish.lua also PUBLISHes each
        tick's channel-layer message there, and with `bar_channels` (one per draft) the
        bars the batch changed, in the same atomic step. With `bars_keep` 0 no bar is
        computed."""
        if not drafts:
            return []
        keys = [self.seq_key, self.epoch_key, self.snapshot_key, self.catalog_key, self.bar_key]
        keys += [self.history_key(d.symbol) for d in drafts]
        bars = self.bars_keep > 0
        args: list[Any] = [self.history_length, new_epoch(), self.bars_keep, self.bars_prefix]
        for i, draft in enumerate(drafts):
            args += [draft.symbol, draft.msgpack_head, draft.json_head, channels[i] if channels else ""]
            if bars and draft.price is not None:
                args += [draft.ts // NS, repr(draft.price), repr(draft.size), bar_channels[i] if bar_channels else ""]
            else:
                args += ["", "", "", ""]
        result = await self._publish(keys, args)
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

    async def finalize_bars(self, symbols: Sequence[str], now_ns: int, channels: Sequence[str] | None = None) -> int:
        """`Store.finalize_bars`; with `channels` (one per symbol) finalize.lua publishes the
        final bars there."""
        done = 0
        now = f"{now_ns // NS}.{now_ns % NS:09d}"
        for at in range(0, len(symbols), FINALIZE_CHUNK):
            args: list[Any] = [self.bars_keep, self.bars_prefix, now]
            for i in range(at, min(at + FINALIZE_CHUNK, len(symbols))):
                args += [symbols[i], channels[i] if channels else ""]
            done += int(await self._finalize(keys=[self.bar_key], args=args))
        return done

    async def bars(self, symbol: str, interval: str, limit: int) -> list[Bar]:
        if limit <= 0:
            return []
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrange(self.bars_key(symbol, interval), -limit, -1)
            pipe.hget(self.bar_key, symbol)
            finals, state = await pipe.execute()
        bars = []
        for raw in finals:
            try:
                start, o, h, lo, c, v, n = msgpack.unpackb(raw, raw=False)
                bars.append(Bar(symbol, interval, int(start), o, h, lo, c, v, int(n), True))
            except Exception:
                log.error("store: ignoring a bar of %s %s that is not one: %r", symbol, interval, raw[:80])
        current = [b for b in _open_bars(symbol, state) if b.interval == interval and not b.final]
        if current and (not bars or current[0].start > bars[-1].start):
            bars.append(current[0])
        return bars[-limit:]

    async def open_bars(self, symbols: Sequence[str]) -> dict[str, list[Bar]]:
        if not symbols:
            return {}
        states = await self.redis.hmget(self.bar_key, list(symbols))
        found = {s: _open_bars(s, raw) for s, raw in zip(symbols, states, strict=True)}
        return {s: bars for s, bars in found.items() if bars}

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
