"""The tick transport over Channels layers, and its contract with channels_redis.

`PubSubTransport` writes PUBLISHes in the pub/sub layer's own format on its own channel
names, through two private helpers of channels_redis. These tests fail loudly, naming
what changed, when a channels_redis release breaks that: run them before widening the
channels-redis range in pyproject.toml.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from channels.layers import InMemoryChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer

from marketstream.adapters.redis_store import RedisStore
from marketstream.adapters.transport import (
    LayerTransport,
    PubSubTransport,
    from_message,
    group_name,
    to_message,
    transport_for,
)
from marketstream.core.store import MemoryStore
from marketstream.core.tick import EncodedTick
from marketstream.core.transport import MalformedMessage
from tests.adapters.conftest import REDIS_URL

SYMBOLS = ["AAPL", "EUR/USD", "FX:GBP_USD"]


def tick(symbol: str, seq: int) -> EncodedTick:
    return EncodedTick.encode(
        {"symbol": symbol, "seq": seq, "ts": 1, "price": 1.5, "size": 2.0, "bid": 1.4, "ask": 1.6}
    )


def pubsub_layer(prefix: str) -> RedisPubSubChannelLayer:
    return RedisPubSubChannelLayer(hosts=[{"address": REDIS_URL, "socket_timeout": None}], prefix=prefix)


@pytest.fixture
async def layers(prefix: str) -> AsyncIterator[tuple[RedisPubSubChannelLayer, RedisPubSubChannelLayer]]:
    """Two layers on one Redis, as a hub process and a feed process have."""
    hub_layer, feed_layer = pubsub_layer(prefix), pubsub_layer(prefix)
    yield hub_layer, feed_layer
    for layer in (hub_layer, feed_layer):
        await layer.flush()


def test_channels_redis_still_has_the_private_helpers_the_adapter_uses() -> None:
    layer = pubsub_layer("contract")
    for name in ("_get_layer", "serialize"):
        assert callable(getattr(RedisPubSubChannelLayer, name, None)), (
            f"channels_redis.pubsub.RedisPubSubChannelLayer.{name} is gone: "
            "marketstream/adapters/transport.py (PubSubTransport.publish) must change"
        )

    async def loop_layer_helper() -> str:
        loop_layer = layer._get_layer()
        helper = getattr(loop_layer, "_get_group_channel_name", None)
        assert callable(helper), (
            "channels_redis's RedisPubSubLoopLayer._get_group_channel_name is gone: "
            "marketstream/adapters/transport.py (PubSubTransport.publish) must change"
        )
        name: str = helper("tick.AAPL")
        return name

    name = asyncio.run(loop_layer_helper())
    assert isinstance(name, str) and name, "the group channel name must be a non-empty string"


async def test_pipelined_publish_reaches_a_hub_in_the_layers_own_format(
    layers: tuple[RedisPubSubChannelLayer, RedisPubSubChannelLayer], store: RedisStore
) -> None:
    hub_layer, feed_layer = layers
    hub = PubSubTransport(hub_layer, store)
    feed = transport_for(feed_layer, store)
    assert isinstance(feed, PubSubTransport), "the pub/sub layer with the Redis store takes the pipelined path"
    await hub.open()
    for symbol in SYMBOLS:
        await hub.join(symbol)
    sent = [tick(s, n) for n in (1, 2) for s in SYMBOLS]
    await feed.publish(sent)
    got = [await asyncio.wait_for(hub.receive(), 5) for _ in sent]
    assert [(t.symbol, t.seq, t.msgpack, t.json) for t in got] == [(t.symbol, t.seq, t.msgpack, t.json) for t in sent]
    snapshots = await store.snapshots(SYMBOLS)
    assert {s: t.seq for s, t in snapshots.items()} == dict.fromkeys(SYMBOLS, 2), "snapshots saved with the publish"
    assert await store.known(SYMBOLS) == [True, True, True], "publish keeps the symbols in the catalog"


async def test_the_layers_own_group_send_and_the_pipelined_publish_are_read_alike(
    layers: tuple[RedisPubSubChannelLayer, RedisPubSubChannelLayer], store: RedisStore
) -> None:
    hub_layer, feed_layer = layers
    hub = PubSubTransport(hub_layer, store)
    await hub.open()
    await hub.join("EUR/USD")
    await feed_layer.group_send(group_name("tick", "EUR/USD"), to_message(tick("EUR/USD", 7)))
    await PubSubTransport(feed_layer, store).publish([tick("EUR/USD", 8)])
    first = await asyncio.wait_for(hub.receive(), 5)
    second = await asyncio.wait_for(hub.receive(), 5)
    assert (first.symbol, first.seq, second.symbol, second.seq) == ("EUR/USD", 7, "EUR/USD", 8)


async def test_after_leave_no_tick_of_the_symbol_arrives(
    layers: tuple[RedisPubSubChannelLayer, RedisPubSubChannelLayer], store: RedisStore
) -> None:
    hub_layer, feed_layer = layers
    hub, feed = PubSubTransport(hub_layer, store), PubSubTransport(feed_layer, store)
    await hub.open()
    await hub.join("AAPL")
    await hub.join("EUR/USD")
    await hub.leave("AAPL")
    await feed.publish([tick("AAPL", 1), tick("EUR/USD", 1)])
    got = await asyncio.wait_for(hub.receive(), 5)
    assert got.symbol == "EUR/USD"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(hub.receive(), 0.3)


async def test_layer_transport_on_the_in_memory_layer() -> None:
    layer = InMemoryChannelLayer()
    store = MemoryStore()
    transport = transport_for(layer, store)
    assert type(transport) is LayerTransport
    await transport.open()
    await transport.join("BTC/USD")
    await transport.publish([tick("BTC/USD", 1), tick("ETH/USD", 1), tick("BTC/USD", 2)])
    got = [await asyncio.wait_for(transport.receive(), 1) for _ in range(2)]
    assert [(t.symbol, t.seq) for t in got] == [("BTC/USD", 1), ("BTC/USD", 2)]
    assert (await store.snapshots(["ETH/USD"]))["ETH/USD"].seq == 1, "saved even with no hub joined"


async def test_receive_skips_messages_of_other_types_and_flags_malformed_ticks() -> None:
    layer = InMemoryChannelLayer()
    transport = LayerTransport(layer, MemoryStore())
    await transport.open()
    await layer.send(transport.channel, {"type": "other"})
    await layer.send(transport.channel, {"type": "tick", "s": "AAPL"})
    with pytest.raises(MalformedMessage):
        await asyncio.wait_for(transport.receive(), 1)
    await layer.send(transport.channel, to_message(tick("AAPL", 3)))
    assert (await asyncio.wait_for(transport.receive(), 1)).seq == 3


@pytest.mark.parametrize(
    "message",
    [
        [],
        {"type": "tick"},
        {"type": "tick", "s": "A", "q": "x", "m": b"", "j": b""},
        {"type": "tick", "s": 1, "q": 1, "m": b"", "j": b""},
        {"type": "tick", "s": "A", "q": 1, "m": "not bytes", "j": b""},
    ],
)
def test_from_message_refuses_what_is_not_a_tick(message: object) -> None:
    with pytest.raises(MalformedMessage):
        from_message(message)


def test_messages_round_trip_and_group_names_are_one_to_one() -> None:
    t = tick("FX:GBP_USD", 9)
    back = from_message(to_message(t))
    assert back is not None and (back.symbol, back.seq, back.msgpack, back.json) == (t.symbol, t.seq, t.msgpack, t.json)
    assert from_message({"type": "something.else"}) is None
    names = {group_name("tick", s) for s in ["A_B", "A/B", "A:B", "A__B", "A_sB", "A_cB"]}
    assert len(names) == 6
    assert all(n.replace("_", "").replace(".", "").replace("-", "").isalnum() for n in names)
