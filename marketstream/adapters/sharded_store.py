"""The store over several shards: each symbol's state on its shard's `RedisStore`.

Every per-symbol operation goes to `shard_of(symbol)`'s store; operations on many symbols
are split per shard and run concurrently, their answers merged in the caller's order.
Reads that span the whole catalog (catalog, descriptions, snapshots, open bars) skip a
shard that is down (`up(i)` false) or fails, so a dead shard hides only its own symbols;
reads the caller asked for by symbol (known, history, tails) raise when their shard fails.
With one shard every call goes straight to its store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from marketstream.adapters.redis_store import RedisStore
from marketstream.adapters.shards import shard_of
from marketstream.core.bars import Bar
from marketstream.core.store import History
from marketstream.core.symbols import SymbolInfo
from marketstream.core.tick import Draft, EncodedTick

log = logging.getLogger(__name__)

T = TypeVar("T")
READ_TIMEOUT = 5.0  # seconds a merged read waits for one shard before leaving it out


class ShardedStore:
    """`Store` over the shards `stores` (shard i = stores[i])."""

    def __init__(self, stores: Sequence[RedisStore], up: Callable[[int], bool] | None = None) -> None:
        if not stores:
            raise ValueError("a sharded store needs at least one shard")
        self.stores = list(stores)
        self.n = len(self.stores)
        self.up: Callable[[int], bool] = up or (lambda i: True)

    @property
    def redis(self) -> Any:
        """Shard 0's client: connection leases live there."""
        return self.stores[0].redis

    def shard(self, symbol: str) -> int:
        return shard_of(symbol, self.n)

    def store_of(self, symbol: str) -> RedisStore:
        return self.stores[shard_of(symbol, self.n)]

    def split(self, symbols: Iterable[str]) -> dict[int, list[str]]:
        """`symbols` per shard, in their order."""
        parts: dict[int, list[str]] = {}
        for symbol in symbols:
            parts.setdefault(shard_of(symbol, self.n), []).append(symbol)
        return parts

    def split_drafts(self, drafts: Sequence[Draft]) -> dict[int, list[int]]:
        """Indexes of `drafts` per shard, in order."""
        parts: dict[int, list[int]] = {}
        n = self.n
        for i, draft in enumerate(drafts):
            parts.setdefault(shard_of(draft.symbol, n), []).append(i)
        return parts

    async def _each(self, calls: Mapping[int, Awaitable[T]]) -> dict[int, T]:
        """Run one call per shard concurrently; raise the first failure."""
        if len(calls) == 1:
            ((i, call),) = calls.items()
            return {i: await call}
        results = await asyncio.gather(*calls.values())
        return dict(zip(calls, results, strict=True))

    async def _merged(self, make: Callable[[RedisStore], Awaitable[T]], what: str) -> list[T]:
        """One call per shard that is up, concurrently; a shard that fails is left out
        (logged). Raises when every shard fails."""
        if self.n == 1:
            return [await make(self.stores[0])]
        chosen = [i for i in range(self.n) if self.up(i)]
        if not chosen:
            raise ConnectionError(f"no shard answers ({what})")
        results = await asyncio.gather(
            *(asyncio.wait_for(make(self.stores[i]), READ_TIMEOUT) for i in chosen), return_exceptions=True
        )
        found: list[T] = []
        failed: list[BaseException] = []
        for i, result in zip(chosen, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                failed.append(result)
                log.warning("store: %s without shard %d: %s: %s", what, i, type(result).__name__, result)
            else:
                found.append(result)
        if not found:
            raise failed[0]
        return found

    # -- the Store protocol -----------------------------------------------------------

    async def register(self, symbols: Iterable[str]) -> None:
        """Register on each shard that is up (publish.lua registers a symbol again with
        each tick, so a shard that was down catches up by itself)."""
        if self.n == 1:
            return await self.stores[0].register(symbols)
        await self._merged_parts(self.split(symbols), lambda store, s: store.register(s), "catalog registration")

    async def known(self, symbols: Sequence[str]) -> list[bool]:
        if self.n == 1:
            return await self.stores[0].known(symbols)
        parts = self.split(symbols)
        answers = await self._each({i: self.stores[i].known(s) for i, s in parts.items()})
        found = {s: ok for i, part in parts.items() for s, ok in zip(part, answers[i], strict=True)}
        return [found[s] for s in symbols]

    async def describe(self, infos: Mapping[str, SymbolInfo]) -> None:
        """Describe on each shard that is up (a down shard's symbols stay undescribed)."""
        if self.n == 1:
            return await self.stores[0].describe(infos)
        await self._merged_parts(
            self.split(infos), lambda store, s: store.describe({x: infos[x] for x in s}), "descriptions"
        )

    async def descriptions(self) -> dict[str, SymbolInfo]:
        found: dict[str, SymbolInfo] = {}
        for part in await self._merged(lambda store: store.descriptions(), "descriptions"):
            found.update(part)
        return found

    async def append(
        self,
        drafts: Sequence[Draft],
        channels: Sequence[str] | None = None,
        bar_channels: Sequence[str] | None = None,
    ) -> list[EncodedTick]:
        """`RedisStore.append` on each draft's shard (concurrently); the ticks in the
        drafts' order. Raises when a shard fails (see `ShardedTransport` for publishing
        that carries on without a dead shard)."""
        if self.n == 1:
            return await self.stores[0].append(drafts, channels, bar_channels)
        parts = self.split_drafts(drafts)
        calls = {i: self.append_part(i, drafts, idx, channels, bar_channels) for i, idx in parts.items()}
        results = await self._each(calls)
        ticks: list[EncodedTick | None] = [None] * len(drafts)
        for i, idx in parts.items():
            for k, tick in zip(idx, results[i], strict=True):
                ticks[k] = tick
        return [t for t in ticks if t is not None]

    def append_part(
        self,
        shard: int,
        drafts: Sequence[Draft],
        indexes: Sequence[int],
        channels: Sequence[str] | None,
        bar_channels: Sequence[str] | None,
    ) -> Awaitable[list[EncodedTick]]:
        """The append of the drafts at `indexes` (all of `shard`)."""
        return self.stores[shard].append(
            [drafts[k] for k in indexes],
            [channels[k] for k in indexes] if channels else None,
            [bar_channels[k] for k in indexes] if bar_channels else None,
        )

    async def snapshots(self, symbols: Sequence[str]) -> dict[str, EncodedTick]:
        if self.n == 1:
            return await self.stores[0].snapshots(symbols)
        parts = self.split(symbols)
        found: dict[str, EncodedTick] = {}
        for part in await self._merged_parts(parts, lambda store, s: store.snapshots(s), "snapshots"):
            found.update(part)
        return found

    async def _merged_parts(
        self,
        parts: dict[int, list[str]],
        make: Callable[[RedisStore, list[str]], Awaitable[T]],
        what: str,
    ) -> list[T]:
        """`make(store, symbols)` for each shard of `parts` that is up; failures left out."""
        chosen = [i for i in parts if self.up(i)]
        results = await asyncio.gather(
            *(asyncio.wait_for(make(self.stores[i], parts[i]), READ_TIMEOUT) for i in chosen), return_exceptions=True
        )
        found: list[T] = []
        for i, result in zip(chosen, results, strict=True):
            if isinstance(result, Exception):
                log.warning("store: %s without shard %d: %s: %s", what, i, type(result).__name__, result)
            elif isinstance(result, BaseException):
                raise result
            else:
                found.append(result)
        return found

    async def history(self, symbol: str, after_seq: int | None, limit: int) -> History:
        return await self.store_of(symbol).history(symbol, after_seq, limit)

    async def tails(self, after: Mapping[str, int], limit: int) -> dict[str, History]:
        if self.n == 1:
            return await self.stores[0].tails(after, limit)
        parts = self.split(after)
        answers = await self._each({i: self.stores[i].tails({s: after[s] for s in p}, limit) for i, p in parts.items()})
        return {s: answers[self.shard(s)][s] for s in after}

    async def bars(self, symbol: str, interval: str, limit: int) -> list[Bar]:
        return await self.store_of(symbol).bars(symbol, interval, limit)

    async def open_bars(self, symbols: Sequence[str]) -> dict[str, list[Bar]]:
        if self.n == 1:
            return await self.stores[0].open_bars(symbols)
        found: dict[str, list[Bar]] = {}
        for part in await self._merged_parts(self.split(symbols), lambda store, s: store.open_bars(s), "open bars"):
            found.update(part)
        return found

    async def finalize_bars(self, symbols: Sequence[str], now_ns: int, channels: Sequence[str] | None = None) -> int:
        if self.n == 1:
            return await self.stores[0].finalize_bars(symbols, now_ns, channels)
        parts = self.split_drafts_of(symbols)
        done = 0
        chosen = [i for i in parts if self.up(i)]
        results = await asyncio.gather(
            *(
                self.stores[i].finalize_bars(
                    [symbols[k] for k in parts[i]], now_ns, [channels[k] for k in parts[i]] if channels else None
                )
                for i in chosen
            ),
            return_exceptions=True,
        )
        for i, result in zip(chosen, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                log.warning("store: bars of shard %d not made final: %s: %s", i, type(result).__name__, result)
            else:
                done += result
        return done

    def split_drafts_of(self, symbols: Sequence[str]) -> dict[int, list[int]]:
        parts: dict[int, list[int]] = {}
        for k, symbol in enumerate(symbols):
            parts.setdefault(shard_of(symbol, self.n), []).append(k)
        return parts

    async def catalog(self) -> dict[str, EncodedTick | None]:
        found: dict[str, EncodedTick | None] = {}
        for part in await self._merged(lambda store: store.catalog(), "catalog"):
            found.update(part)
        return dict(sorted(found.items()))

    async def ping(self) -> None:
        """Raise unless every shard answers."""
        await self._each({i: store.ping() for i, store in enumerate(self.stores)})
