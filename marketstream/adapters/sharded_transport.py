"""Publishing over shards: each shard's part of a batch published on its own, with a timeout.

`ShardedTransport` is `PubSubTransport` over a `ShardedStore`: a batch is split per
shard (publish.lua on each, concurrently), so that one symbol's atomic step stays on its
shard. A shard that is down (its `ShardMonitor` says so) is skipped at once; one that
fails or does not answer within the timeout is marked down. Either way the other shards'
ticks are published and `Unavailable` says which symbols' were not: a dead shard, or a
link that silently drops packets, costs a feed loop at most one timeout, then nothing,
until the monitor finds the shard back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from channels_redis.pubsub import RedisPubSubChannelLayer

from marketstream.adapters.redis_store import RedisStore
from marketstream.adapters.shard_health import GRACE, TIMEOUT, ShardMonitor
from marketstream.adapters.sharded_store import ShardedStore
from marketstream.adapters.shards import ShardAddress, connect
from marketstream.adapters.transport import LayerTransport, group_name
from marketstream.core.tick import Draft, EncodedTick
from marketstream.core.transport import Unavailable


class ShardedTransport(LayerTransport):
    """Ticks over the sharded pub/sub layer, published by publish.lua on each symbol's shard."""

    def __init__(
        self, layer: RedisPubSubChannelLayer, store: ShardedStore, monitor: ShardMonitor, timeout: float = 2.0
    ) -> None:
        super().__init__(layer, store)
        self.sharded = store
        self.monitor = monitor
        self.timeout = timeout

    async def publish(self, drafts: Sequence[Draft]) -> list[EncodedTick]:
        if not drafts:
            return []
        channel_of = self.layer._get_layer()._get_group_channel_name
        tick_prefix, bars_prefix = self.group_prefix, self.bars_prefix
        channels = [channel_of(group_name(tick_prefix, d.symbol)) for d in drafts]
        bar_channels = [channel_of(group_name(bars_prefix, d.symbol)) for d in drafts]
        store, monitor = self.sharded, self.monitor
        parts = store.split_drafts(drafts)
        live = [i for i in parts if monitor.up(i)]
        results = await self._append(live, parts, drafts, channels, bar_channels)
        ticks: list[EncodedTick | None] = [None] * len(drafts)
        failed = [i for i in parts if i not in live]
        for i, result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                monitor.fail(i, result)
                failed.append(i)
            else:
                for k, tick in zip(parts[i], result, strict=True):
                    ticks[k] = tick
        published = [t for t in ticks if t is not None]
        if failed:
            for i in failed:
                monitor.dropped(i, len(parts[i]))
            symbols = {drafts[k].symbol for i in failed for k in parts[i]}
            shards = ", ".join(str(i) for i in sorted(failed))
            raise Unavailable(published, symbols, f"shard {shards} down: {len(symbols)} symbols not published")
        return published

    async def _append(
        self,
        live: list[int],
        parts: dict[int, list[int]],
        drafts: Sequence[Draft],
        channels: list[str],
        bar_channels: list[str],
    ) -> list[list[EncodedTick] | BaseException]:
        """The append of each live shard's part, each within `timeout`; a result or the
        exception of each. One part (one shard, or every symbol of the batch on one: the
        common case) is awaited directly, without the tasks of `gather` and `wait_for`."""
        store = self.sharded
        if len(live) == 1:
            i = live[0]
            try:
                async with asyncio.timeout(self.timeout):
                    return [await store.append_part(i, drafts, parts[i], channels, bar_channels)]
            except Exception as exc:
                return [exc]
        return await asyncio.gather(
            *(
                asyncio.wait_for(store.append_part(i, drafts, parts[i], channels, bar_channels), self.timeout)
                for i in live
            ),
            return_exceptions=True,
        )

    async def finalize_bars(self, symbols: Sequence[str], now_ns: int) -> int:
        channel_of = self.layer._get_layer()._get_group_channel_name
        channels = [channel_of(group_name(self.bars_prefix, s)) for s in symbols]
        store, monitor = self.sharded, self.monitor
        parts = store.split_drafts_of(symbols)
        live = [i for i in parts if monitor.up(i)]
        results = await asyncio.gather(
            *(
                asyncio.wait_for(
                    store.stores[i].finalize_bars(
                        [symbols[k] for k in parts[i]], now_ns, [channels[k] for k in parts[i]]
                    ),
                    self.timeout * 2,
                )
                for i in live
            ),
            return_exceptions=True,
        )
        done = 0
        for i, result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                monitor.fail(i, result)
            else:
                done += result
        return done


@dataclass
class Shards:
    """The Redis side of a hub or feed: the sharded store, its health monitor, and the
    transport over the sharded layer."""

    store: ShardedStore
    monitor: ShardMonitor
    transport: ShardedTransport


def open_shards(
    layer: RedisPubSubChannelLayer,
    addresses: Sequence[ShardAddress],
    prefix: str,
    history_length: int,
    bars_keep: int,
    role: str,
    timeout: float = TIMEOUT,
    grace: float = GRACE,
) -> Shards:
    """Build (without I/O) the store, monitor and transport of `addresses`; start the
    monitor with `await shards.monitor.start()`."""
    stores = [RedisStore(connect(a), prefix, history_length, bars_keep) for a in addresses]
    store = ShardedStore(stores)
    monitor = ShardMonitor(addresses, [s.redis for s in stores], prefix, role, timeout=timeout, grace=grace)
    store.up = monitor.up
    return Shards(store, monitor, ShardedTransport(layer, store, monitor, timeout))
