"""The publisher: stamps, sequences, stores and sends ticks. The only encoder of ticks.

For each quote: stamp `ts`, assign the symbol's next `seq`, encode the tick once (both
codecs), save it as the symbol's snapshot, then send it to the symbol's group. Seq
continues from the stored snapshot, so it survives restarts of the feed.

With Redis and the pub/sub layer a batch is one round trip: a MULTI with the snapshot
HSET first and one PUBLISH per tick, in the layer's own message format and channel
names, so every hub's layer receives them as if from `group_send`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer

from feeds.simulated import Quote
from marketstream.store import RedisStore, Store
from marketstream.symbols import group_name
from marketstream.tick import EncodedTick, Tick, now_ns

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, layer: Any, store: Store, group_prefix: str) -> None:
        self.layer = layer
        self.store = store
        self.group_prefix = group_prefix
        self.seq: dict[str, int] = {}

    async def prepare(self, symbols: Sequence[str]) -> None:
        """Register `symbols` in the catalog and continue their seq from the snapshots."""
        await self.store.register(symbols)
        snapshots = await self.store.snapshots(list(symbols))
        for symbol in symbols:
            self.seq[symbol] = snapshots[symbol].seq if symbol in snapshots else 0

    def stamp(self, quotes: Sequence[Quote]) -> list[EncodedTick]:
        ts = now_ns()
        ticks = []
        for symbol, price, size, bid, ask in quotes:
            seq = self.seq.get(symbol, 0) + 1
            self.seq[symbol] = seq
            tick: Tick = {"symbol": symbol, "seq": seq, "ts": ts, "price": price, "size": size, "bid": bid, "ask": ask}
            ticks.append(EncodedTick.encode(tick))
        return ticks

    async def publish(self, quotes: Sequence[Quote]) -> list[EncodedTick]:
        """Publish a batch of quotes as ticks; returns them."""
        ticks = self.stamp(quotes)
        if not ticks:
            return ticks
        if isinstance(self.store, RedisStore) and isinstance(self.layer, RedisPubSubChannelLayer):
            await self._publish_pipelined(self.store, self.layer, ticks)
        else:
            await self.store.save(ticks)
            for tick in ticks:
                await self.layer.group_send(group_name(self.group_prefix, tick.symbol), tick.to_message())
        return ticks

    async def _publish_pipelined(
        self, store: RedisStore, layer: RedisPubSubChannelLayer, ticks: list[EncodedTick]
    ) -> None:
        loop_layer = layer._get_layer()
        async with store.redis.pipeline(transaction=True) as pipe:
            store.queue_save(pipe, ticks)
            for tick in ticks:
                channel = loop_layer._get_group_channel_name(group_name(self.group_prefix, tick.symbol))
                pipe.publish(channel, layer.serialize(tick.to_message()))
            await pipe.execute()
