"""The tick transport over a Channels layer: one group per symbol, one member per hub.

`LayerTransport` works on any layer (the in-memory layer of the embedded default): the
store assigns seq and keeps the ticks, then each tick is one `group_send`.
`PubSubTransport` is for channels_redis's pub/sub layer with the Redis store: a batch
is one call of publish.lua, which assigns seq, keeps the ticks and PUBLISHes them in
the layer's own message format on its own channel names, in one atomic step, so every
hub's layer receives them as if from `group_send`, in seq order whatever the number of
publishers.
That needs two private helpers of channels_redis (`_get_layer`,
`_get_group_channel_name`): this module is the only place that uses them, and
tests/adapters/test_transport.py fails loudly when a channels_redis release breaks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer

from marketstream.adapters.redis_store import RedisStore
from marketstream.core.store import Store
from marketstream.core.tick import Draft, EncodedTick
from marketstream.core.transport import MalformedMessage, TickTransport

GROUP_PREFIX = "tick"


def group_name(prefix: str, symbol: str) -> str:
    """The channel-layer group of a symbol.

    Channels allows only ASCII alphanumerics, hyphens, underscores and periods in
    group names, so the characters ``/`` and ``:`` are escaped (``/`` -> ``_s``,
    ``:`` -> ``_c``, ``_`` -> ``__``): the mapping is one-to-one.
    """
    escaped = symbol.replace("_", "__").replace("/", "_s").replace(":", "_c")
    return f"{prefix}.{escaped}"


def to_message(tick: EncodedTick) -> dict[str, Any]:
    """The channel-layer message that carries a tick to every hub."""
    return {"type": "tick", "s": tick.symbol, "q": tick.seq, "m": tick.msgpack, "j": tick.json, "e": tick.epoch}


def from_message(message: Any) -> EncodedTick | None:
    """The tick a layer message carries; None for a message of another type.
    Raises MalformedMessage when it claims to be a tick and is not one."""
    if not isinstance(message, dict):
        raise MalformedMessage(f"expected a dict message, got {type(message).__name__}")
    if message.get("type") != "tick":
        return None
    try:
        symbol, seq, packed, json = message["s"], int(message["q"]), message["m"], message["j"]
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage(f"tick message without a valid {exc!s}") from exc
    epoch = message.get("e", "")
    if not (isinstance(symbol, str) and isinstance(packed, bytes) and isinstance(json, bytes)):
        raise MalformedMessage("tick message fields have the wrong types")
    if not isinstance(epoch, str):
        raise MalformedMessage(f"tick message epoch must be a string, got {type(epoch).__name__}")
    return EncodedTick(symbol, seq, packed, json, epoch)


class LayerTransport:
    """Ticks over any Channels layer, to the groups `<group_prefix>.<SYMBOL>`."""

    def __init__(self, layer: Any, store: Store, group_prefix: str = GROUP_PREFIX) -> None:
        self.layer = layer
        self.store = store
        self.group_prefix = group_prefix
        self.channel = ""  # this hub's channel, once opened

    async def open(self) -> None:
        if not self.channel:
            # The default prefix matters on the core RedisChannelLayer: its process-wide
            # receive lock serves one "specific." channel per process, shared by all.
            self.channel = await self.layer.new_channel()

    async def receive(self) -> EncodedTick:
        receive, channel = self.layer.receive, self.channel
        while True:
            tick = from_message(await receive(channel))
            if tick is not None:
                return tick

    async def join(self, symbol: str) -> None:
        await self.layer.group_add(group_name(self.group_prefix, symbol), self.channel)

    async def leave(self, symbol: str) -> None:
        await self.layer.group_discard(group_name(self.group_prefix, symbol), self.channel)

    async def publish(self, drafts: Sequence[Draft]) -> list[EncodedTick]:
        ticks = await self.store.append(drafts)
        for tick in ticks:
            await self.layer.group_send(group_name(self.group_prefix, tick.symbol), to_message(tick))
        return ticks


class PubSubTransport(LayerTransport):
    """Ticks over channels_redis's pub/sub layer, published by publish.lua as they are kept."""

    def __init__(self, layer: RedisPubSubChannelLayer, store: RedisStore, group_prefix: str = GROUP_PREFIX) -> None:
        super().__init__(layer, store, group_prefix)
        self.redis_store = store

    async def publish(self, drafts: Sequence[Draft]) -> list[EncodedTick]:
        loop_layer = self.layer._get_layer()
        channels = [loop_layer._get_group_channel_name(group_name(self.group_prefix, d.symbol)) for d in drafts]
        return await self.redis_store.append(drafts, channels)


def transport_for(layer: Any, store: Store, group_prefix: str = GROUP_PREFIX) -> TickTransport:
    """The transport for a layer and a store: pipelined on the Redis pub/sub layer with the
    Redis store, one `group_send` per tick otherwise."""
    if isinstance(layer, RedisPubSubChannelLayer) and isinstance(store, RedisStore):
        return PubSubTransport(layer, store, group_prefix)
    return LayerTransport(layer, store, group_prefix)
