"""The tick transport over a Channels layer: one group per symbol, one member per hub.

`LayerTransport` works on any layer (the in-memory layer of the embedded default): the
store assigns seq and keeps the ticks, then each tick is one `group_send`.
`PubSubTransport` is for channels_redis's pub/sub layer with the Redis store: a batch
is one call of publish.lua, which assigns seq, keeps the ticks and PUBLISHes them in
the layer's own message format on its own channel names, in one atomic step, so every
hub's layer receives them as if from `group_send`, in seq order whatever the number of
publishers.

Bars travel beside the ticks on a group of their own per symbol, `bars.<SYMBOL>`, joined
only by hubs with a bar subscriber of the symbol: one message per symbol per publish
(or finalization) with every bar it changed.
That needs two private helpers of channels_redis (`_get_layer`,
`_get_group_channel_name`): this module is the only place that uses them, and
tests/adapters/test_transport.py fails loudly when a channels_redis release breaks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer

from marketstream.adapters.redis_store import RedisStore
from marketstream.core.bars import INTERVALS, Bar, BarUpdate
from marketstream.core.store import MemoryStore, Store
from marketstream.core.tick import Draft, EncodedTick
from marketstream.core.transport import MalformedMessage, TickTransport

GROUP_PREFIX = "tick"
BARS_PREFIX = "bars"
INTERVAL_NAMES = list(INTERVALS)  # bars.lua numbers them 1 (1s) to 5 (1h)
INTERVAL_INDEX = {name: k for k, name in enumerate(INTERVAL_NAMES, 1)}


def group_name(prefix: str, symbol: str) -> str:
    """The channel-layer group of a symbol.

    Channels allows only ASCII alphanumerics, hyphens, underscores and periods in
    group names, so the characters ``/`` and ``:`` are escaped (``/`` -> ``_s``,
    ``:`` -> ``_c``, ``_`` -> ``__``): the mapping is one-to-one.
    """
    escaped = symbol.replace("_", "__").replace("/", "_s").replace(":", "_c")
    return f"{prefix}.{escaped}"


UNESCAPE = {"_": "_", "s": "/", "c": ":"}


def symbol_of_group(group: str) -> str:
    """The symbol of a group named by `group_name` (whatever its prefix); a name without
    a prefix is taken whole."""
    _, dot, escaped = group.partition(".")
    if not dot:
        return group
    if "_" not in escaped:
        return escaped
    out, i, n = [], 0, len(escaped)
    while i < n:
        char = escaped[i]
        if char == "_" and i + 1 < n:
            nxt = escaped[i + 1]
            out.append(UNESCAPE.get(nxt, "_" + nxt))
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def to_message(tick: EncodedTick) -> dict[str, Any]:
    """The channel-layer message that carries a tick to every hub."""
    return {"type": "tick", "s": tick.symbol, "q": tick.seq, "m": tick.msgpack, "j": tick.json, "e": tick.epoch}


def bars_message(update: BarUpdate) -> dict[str, Any]:
    """The channel-layer message that carries a bar update to every hub, in bars.lua's form:
    `b` the newest bar of each interval k (1 = 1s ... 5 = 1h), 8 numbers each from
    (k - 1) * 8: start (0: none), o, h, l, c, v, n, final; `c` the intervals whose open bar
    in `b` changed; `f` the bars made final, each [k, start, o, h, l, c, v, n]."""
    state: list[Any] = [0] * (8 * len(INTERVALS))
    changed, finals = [], []
    for bar in update.bars:
        k = INTERVAL_INDEX[bar.interval]
        entry = [bar.start, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.count]
        if bar.final:
            finals.append([k, *entry])
        else:
            state[(k - 1) * 8 : k * 8] = [*entry, 0]
            changed.append(k)
    return {"type": "bars", "s": update.symbol, "b": state, "c": changed, "f": finals}


def _interval(k: Any) -> str:
    if not isinstance(k, int) or not 1 <= k <= len(INTERVAL_NAMES):
        raise ValueError(f"no interval numbered {k!r}")
    return INTERVAL_NAMES[k - 1]


def _bar_update(message: dict[str, Any]) -> BarUpdate:
    """The bars a `bars` message carries: the final ones, then the open ones that changed."""
    symbol, state, changed, finals = message.get("s"), message.get("b"), message.get("c"), message.get("f")
    if not (isinstance(symbol, str) and isinstance(state, list) and isinstance(changed, list)):
        raise MalformedMessage("bars message without a symbol, its bars and what changed")
    if not isinstance(finals, list):
        raise MalformedMessage("bars message without its final bars")
    try:
        bars = [Bar(symbol, _interval(k), int(s), o, h, lo, c, v, int(n), True) for k, s, o, h, lo, c, v, n in finals]
        for k in changed:
            s, o, h, lo, c, v, n, final = state[(k - 1) * 8 : k * 8]
            if not s:
                raise ValueError(f"interval {k} changed but has no bar")
            bars.append(Bar(symbol, _interval(k), int(s), o, h, lo, c, v, int(n), final == 1))
    except (TypeError, ValueError, IndexError) as exc:
        raise MalformedMessage(f"bars message of {symbol} is not one: {exc}") from exc
    return BarUpdate(symbol, bars)


def from_message(message: Any) -> EncodedTick | BarUpdate | None:
    """The tick or bar update a layer message carries; None for a message of another type.
    Raises MalformedMessage when it claims to be one and is not."""
    if not isinstance(message, dict):
        raise MalformedMessage(f"expected a dict message, got {type(message).__name__}")
    if message.get("type") != "tick":
        return _bar_update(message) if message.get("type") == "bars" else None
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
    """Ticks over any Channels layer, to the groups `<group_prefix>.<SYMBOL>`, and bars to
    `<bars_prefix>.<SYMBOL>`. Bars are sent when the store is the in-memory one (the
    embedded default); a Redis store with another layer than pub/sub keeps them only."""

    def __init__(
        self, layer: Any, store: Store, group_prefix: str = GROUP_PREFIX, bars_prefix: str = BARS_PREFIX
    ) -> None:
        self.layer = layer
        self.store = store
        self.group_prefix = group_prefix
        self.bars_prefix = bars_prefix
        self.channel = ""  # this hub's channel, once opened

    async def open(self) -> None:
        if not self.channel:
            # The default prefix matters on the core RedisChannelLayer: its process-wide
            # receive lock serves one "specific." channel per process, shared by all.
            self.channel = await self.layer.new_channel()

    async def receive(self) -> EncodedTick | BarUpdate:
        receive, channel = self.layer.receive, self.channel
        while True:
            tick = from_message(await receive(channel))
            if tick is not None:
                return tick

    async def join(self, symbol: str) -> None:
        await self.layer.group_add(group_name(self.group_prefix, symbol), self.channel)

    async def leave(self, symbol: str) -> None:
        await self.layer.group_discard(group_name(self.group_prefix, symbol), self.channel)

    async def join_bars(self, symbol: str) -> None:
        await self.layer.group_add(group_name(self.bars_prefix, symbol), self.channel)

    async def leave_bars(self, symbol: str) -> None:
        await self.layer.group_discard(group_name(self.bars_prefix, symbol), self.channel)

    async def publish(self, drafts: Sequence[Draft]) -> list[EncodedTick]:
        store = self.store
        updates: list[BarUpdate] = []
        if isinstance(store, MemoryStore):
            ticks, updates = store.append_with_bars(drafts)
        else:
            ticks = await store.append(drafts)
        for tick in ticks:
            await self.layer.group_send(group_name(self.group_prefix, tick.symbol), to_message(tick))
        await self._send_bars(updates)
        return ticks

    async def finalize_bars(self, symbols: Sequence[str], now_ns: int) -> int:
        store = self.store
        if not isinstance(store, MemoryStore):
            return await store.finalize_bars(symbols, now_ns)
        updates = store.finalize(symbols, now_ns)
        await self._send_bars(updates)
        return sum(len(u.bars) for u in updates)

    async def _send_bars(self, updates: Sequence[BarUpdate]) -> None:
        for update in updates:
            await self.layer.group_send(group_name(self.bars_prefix, update.symbol), bars_message(update))


class PubSubTransport(LayerTransport):
    """Ticks over channels_redis's pub/sub layer, published by publish.lua as they are kept."""

    def __init__(
        self,
        layer: RedisPubSubChannelLayer,
        store: RedisStore,
        group_prefix: str = GROUP_PREFIX,
        bars_prefix: str = BARS_PREFIX,
    ) -> None:
        super().__init__(layer, store, group_prefix, bars_prefix)
        self.redis_store = store

    async def publish(self, drafts: Sequence[Draft]) -> list[EncodedTick]:
        channel_of = self.layer._get_layer()._get_group_channel_name
        channels = [channel_of(group_name(self.group_prefix, d.symbol)) for d in drafts]
        bar_channels = [channel_of(group_name(self.bars_prefix, d.symbol)) for d in drafts]
        return await self.redis_store.append(drafts, channels, bar_channels)

    async def finalize_bars(self, symbols: Sequence[str], now_ns: int) -> int:
        channel_of = self.layer._get_layer()._get_group_channel_name
        channels = [channel_of(group_name(self.bars_prefix, s)) for s in symbols]
        return await self.redis_store.finalize_bars(symbols, now_ns, channels)


def transport_for(layer: Any, store: Store, group_prefix: str = GROUP_PREFIX) -> TickTransport:
    """The transport for a layer and a store: pipelined on the Redis pub/sub layer with the
    Redis store, one `group_send` per tick otherwise."""
    if isinstance(layer, RedisPubSubChannelLayer) and isinstance(store, RedisStore):
        return PubSubTransport(layer, store, group_prefix)
    return LayerTransport(layer, store, group_prefix)
