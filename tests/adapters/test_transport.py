"""The tick transport over Channels layers, and its contract with channels_redis.

`PubSubTransport` has publish.lua write PUBLISHes in the pub/sub layer's own message
format (msgpack, no prefix) on its own channel names, which it gets from a private
helper of channels_redis. These tests fail loudly, naming what changed, when a
channels_redis release breaks that: run them before widening the channels-redis range
in pyproject.toml.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgpack
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
from marketstream.core.tick import Draft, EncodedTick
from marketstream.core.transport import MalformedMessage
from tests.adapters.conftest import REDIS_URL

SYMBOLS = ["AAPL", "EUR/USD", "FX:GBP_USD"]


def tick(symbol: str, seq: int) -> EncodedTick:
    return draft(symbol).complete(seq)


async def received(transport: LayerTransport, within: float) -> EncodedTick:
    """The next message the transport receives, which must be a tick."""
    got = await asyncio.wait_for(transport.receive(), within)
    assert isinstance(got, EncodedTick), f"expected a tick, got {got!r}"
    return got


def draft(symbol: str, price: float = 1.5) -> Draft:
    return Draft.encode({"symbol": symbol, "ts": 1, "price": price, "size": 2.0, "bid": 1.4, "ask": 1.6})


def same(a: EncodedTick, b: EncodedTick) -> bool:
    return (a.symbol, a.seq, a.msgpack, a.json, a.epoch) == (b.symbol, b.seq, b.msgpack, b.json, b.epoch)


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
    for name in ("_get_layer", "deserialize"):
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
    packed = msgpack.packb({"type": "tick", "s": "A"})
    assert layer.deserialize(packed) == {"type": "tick", "s": "A"}, (
        "channels_redis's pub/sub layer no longer reads plain msgpack messages: publish.lua writes those"
    )


async def test_pipelined_publish_reaches_a_hub_in_the_layers_own_format(
    layers: tuple[RedisPubSubChannelLayer, RedisPubSubChannelLayer], store: RedisStore
) -> None:
    hub_layer, feed_layer = layers
    hub = PubSubTransport(hub_layer, store)
    feed = transport_for(feed_layer, store)
    assert isinstance(feed, PubSubTransport), "the pub/sub layer with the Redis store takes the script's path"
    await hub.open()
    for symbol in SYMBOLS:
        await hub.join(symbol)
    sent = await feed.publish([draft(s) for _ in (1, 2) for s in SYMBOLS])
    assert [(t.symbol, t.seq) for t in sent] == [(s, n) for n in (1, 2) for s in SYMBOLS]
    assert len({t.epoch for t in sent}) == 1 and sent[0].epoch, "new symbols get an epoch"
    got = [await received(hub, 5) for _ in sent]
    assert all(same(a, b) for a, b in zip(got, sent, strict=True)), (got, sent)
    assert got[0].msgpack == msgpack.packb({**draft(SYMBOLS[0]).complete(1).decode()}), "the script's bytes are msgpack"
    snapshots = await store.snapshots(SYMBOLS)
    assert {s: t.seq for s, t in snapshots.items()} == dict.fromkeys(SYMBOLS, 2), "snapshots saved with the publish"
    assert all(snapshots[s].epoch == sent[0].epoch for s in SYMBOLS)
    assert await store.known(SYMBOLS) == [True, True, True], "publish keeps the symbols in the catalog"
    history = await store.history("EUR/USD", None, 10)
    assert [t.seq for t in history.ticks] == [1, 2] and history.first_seq == 1 and history.last_seq == 2


async def test_the_layers_own_group_send_and_the_script_publish_are_read_alike(
    layers: tuple[RedisPubSubChannelLayer, RedisPubSubChannelLayer], store: RedisStore
) -> None:
    hub_layer, feed_layer = layers
    hub = PubSubTransport(hub_layer, store)
    await hub.open()
    await hub.join("EUR/USD")
    await feed_layer.group_send(group_name("tick", "EUR/USD"), to_message(draft("EUR/USD").complete(7, "e1")))
    (published,) = await PubSubTransport(feed_layer, store).publish([draft("EUR/USD")])
    first = await received(hub, 5)
    second = await received(hub, 5)
    assert (first.symbol, first.seq, first.epoch) == ("EUR/USD", 7, "e1")
    assert same(second, published)


async def test_after_leave_no_tick_of_the_symbol_arrives(
    layers: tuple[RedisPubSubChannelLayer, RedisPubSubChannelLayer], store: RedisStore
) -> None:
    hub_layer, feed_layer = layers
    hub, feed = PubSubTransport(hub_layer, store), PubSubTransport(feed_layer, store)
    await hub.open()
    await hub.join("AAPL")
    await hub.join("EUR/USD")
    await hub.leave("AAPL")
    await feed.publish([draft("AAPL"), draft("EUR/USD")])
    got = await received(hub, 5)
    assert got.symbol == "EUR/USD"
    with pytest.raises(TimeoutError):
        await received(hub, 0.3)


async def test_two_publishers_of_one_symbol_share_one_gap_free_seq(
    layers: tuple[RedisPubSubChannelLayer, RedisPubSubChannelLayer], store: RedisStore, prefix: str
) -> None:
    """Publishers in separate layers (as separate processes) publish one symbol at once:
    the hub sees one strictly increasing seq with no gap, in publish order."""
    hub_layer, feed_layer = layers
    other_layer = pubsub_layer(prefix)
    hub = PubSubTransport(hub_layer, store)
    await hub.open()
    await hub.join("AAPL")
    feeds = [PubSubTransport(feed_layer, store), PubSubTransport(other_layer, store)]

    async def publish(feed: PubSubTransport, price: float) -> None:
        for _ in range(50):
            await feed.publish([draft("AAPL", price), draft("AAPL", price)])

    await asyncio.gather(publish(feeds[0], 1.0), publish(feeds[1], 2.0))
    got = [await received(hub, 5) for _ in range(200)]
    assert [t.seq for t in got] == list(range(1, 201)), "one seq, in publish order, no gap, no duplicate"
    assert {t.decode()["price"] for t in got} == {1.0, 2.0}, "both publishers' ticks arrived"
    await other_layer.flush()


async def test_a_symbol_whose_seq_is_lost_starts_a_new_epoch(store: RedisStore) -> None:
    first = await store.append([draft("AAPL"), draft("AAPL")])
    assert [t.seq for t in first] == [1, 2]
    again = await store.append([draft("AAPL")])
    assert again[0].seq == 3 and again[0].epoch == first[0].epoch, "the epoch stays while the seq is kept"
    await store.redis.delete(store.seq_key, store.epoch_key, store.snapshot_key)  # Redis lost its data
    after = await store.append([draft("AAPL")])
    assert after[0].seq == 1 and after[0].epoch != first[0].epoch
    history = await store.history("AAPL", None, 10)
    assert [t.seq for t in history.ticks] == [1] and history.epoch == after[0].epoch, "old history is dropped"


async def test_a_snapshot_from_before_the_seq_hash_continues_its_seq(store: RedisStore) -> None:
    """An upgrade: a snapshot written by a version that kept no seq hash says where seq was."""
    await store.redis.hset(store.snapshot_key, "MSFT", draft("MSFT").complete(41).msgpack)
    (tick,) = await store.append([draft("MSFT")])
    assert tick.seq == 42 and tick.epoch


async def test_layer_transport_on_the_in_memory_layer() -> None:
    layer = InMemoryChannelLayer()
    store = MemoryStore()
    transport = transport_for(layer, store)
    assert type(transport) is LayerTransport
    await transport.open()
    await transport.join("BTC/USD")
    await transport.publish([draft("BTC/USD"), draft("ETH/USD"), draft("BTC/USD")])
    got = [await received(transport, 1) for _ in range(2)]
    assert [(t.symbol, t.seq) for t in got] == [("BTC/USD", 1), ("BTC/USD", 2)]
    assert got[0].epoch and got[0].epoch == got[1].epoch
    assert (await store.snapshots(["ETH/USD"]))["ETH/USD"].seq == 1, "saved even with no hub joined"


async def test_receive_skips_messages_of_other_types_and_flags_malformed_ticks() -> None:
    layer = InMemoryChannelLayer()
    transport = LayerTransport(layer, MemoryStore())
    await transport.open()
    await layer.send(transport.channel, {"type": "other"})
    await layer.send(transport.channel, {"type": "tick", "s": "AAPL"})
    with pytest.raises(MalformedMessage):
        await received(transport, 1)
    await layer.send(transport.channel, to_message(tick("AAPL", 3)))
    assert (await received(transport, 1)).seq == 3


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
    assert isinstance(back, EncodedTick) and (back.symbol, back.seq, back.msgpack, back.json) == (
        t.symbol,
        t.seq,
        t.msgpack,
        t.json,
    )
    assert from_message({"type": "something.else"}) is None
    names = {group_name("tick", s) for s in ["A_B", "A/B", "A:B", "A__B", "A_sB", "A_cB"]}
    assert len(names) == 6
    assert all(n.replace("_", "").replace(".", "").replace("-", "").isalnum() for n in names)
