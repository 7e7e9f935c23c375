"""The sharded pub/sub layer's receiver (adapters/layer.py) against the real Redis: a burst
of messages is taken from the reader in one go, in order, and what redis-py relies on
for that is still there.

`ShardConnection._drain` reads the replies redis-py's hiredis reader already holds
without calling `get_message` for each. These tests fail loudly, naming what changed,
when a redis-py release moves that: run them before widening the redis range in
pyproject.toml.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from redis import asyncio as aioredis
from redis._parsers.resp3 import _AsyncRESP3Parser

from marketstream.adapters import layer as layer_module
from marketstream.adapters.layer import ShardedPubSubChannelLayer, reader_of
from marketstream.adapters.transport import group_name
from tests.adapters.conftest import REDIS_URL

BURST = 200


def sharded(prefix: str, **host: Any) -> ShardedPubSubChannelLayer:
    return ShardedPubSubChannelLayer(hosts=[{"address": REDIS_URL, **host}], prefix=prefix)


@pytest.fixture
async def publisher() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


async def joined(layer: ShardedPubSubChannelLayer, symbols: list[str]) -> tuple[str, list[str]]:
    """A hub channel in the groups of `symbols`; returns it and the groups' pub/sub channels."""
    channel = await layer.new_channel()
    for symbol in symbols:
        await layer.group_add(group_name("tick", symbol), channel)
    inner = layer._get_layer()
    return channel, [inner._get_group_channel_name(group_name("tick", s)) for s in symbols]


async def burst(client: aioredis.Redis, channels: list[str], n: int, start: int = 0) -> None:
    """`n` messages over `channels` in one pipeline: they reach the subscriber together."""
    pipe = client.pipeline(transaction=False)
    for i in range(start, start + n):
        pipe.publish(channels[i % len(channels)], msgpack.packb({"type": "tick", "i": i}))
    await pipe.execute()


async def receive(layer: ShardedPubSubChannelLayer, channel: str, n: int) -> list[int]:
    return [(await asyncio.wait_for(layer.receive(channel), 5))["i"] for _ in range(n)]


def test_redis_py_still_has_what_the_drain_reads() -> None:
    async def check() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe("contract-layer")
            reader = reader_of(pubsub.connection)
            assert reader is not None, (
                "redis-py's asyncio connection has no hiredis reader at `_parser._reader` any more: "
                "marketstream/adapters/layer.py (ShardConnection._drain, reader_of) must change"
            )
            await client.publish("contract-layer", b"x")
            first = None
            for _ in range(10):  # the subscribe's confirmation reads as None first
                first = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if first is not None:
                    break
            assert first is not None and first["data"] == b"x", f"a published message reads as {first!r}"
            assert reader.gets() is layer_module.NOT_ENOUGH_DATA, (
                "hiredis' reader no longer answers redis-py's NOT_ENOUGH_DATA when it holds no reply"
            )
            await client.publish("contract-layer", b"y")
            for _ in range(50):
                reply = reader.gets()
                if reply is not layer_module.NOT_ENOUGH_DATA:
                    break
                await pubsub.connection._parser.read_from_socket()  # type: ignore[attr-defined]
            assert isinstance(reply, list) and list(reply) == [b"message", b"contract-layer", b"y"], (
                f"a published message's reply is {reply!r}, not [b'message', channel, data]"
            )
            assert callable(getattr(pubsub, "handle_message", None)), "redis-py's PubSub.handle_message is gone"
        finally:
            await pubsub.aclose()
            await client.aclose()

    asyncio.run(check())


async def test_a_burst_arrives_whole_and_in_order_mostly_without_get_message(
    prefix: str, publisher: aioredis.Redis
) -> None:
    layer = sharded(prefix)
    try:
        channel, channels = await joined(layer, ["AAPL", "EUR/USD", "FX:GBP_USD"])
        shard = layer._get_layer().shards[0]
        await asyncio.sleep(0.2)  # the subscriptions are confirmed
        await burst(publisher, channels, BURST)
        assert await receive(layer, channel, BURST) == list(range(BURST))
        assert shard.drained >= BURST // 2, f"only {shard.drained} of {BURST} messages were drained from the reader"
    finally:
        await layer.flush()


async def test_joins_and_leaves_between_bursts_keep_redis_py_s_subscription_state(
    prefix: str, publisher: aioredis.Redis
) -> None:
    layer = sharded(prefix)
    try:
        channel, (aapl, eur) = await joined(layer, ["AAPL", "EUR/USD"])
        await asyncio.sleep(0.2)
        await burst(publisher, [aapl, eur], 50)
        await layer.group_add(group_name("tick", "MSFT"), channel)  # its confirmation lands beside a burst
        await burst(publisher, [aapl, eur], 50, start=50)
        assert await receive(layer, channel, 100) == list(range(100))
        await layer.group_discard(group_name("tick", "AAPL"), channel)
        await burst(publisher, [eur], 20, start=100)
        await publisher.publish(aapl, msgpack.packb({"type": "tick", "i": -1}))
        await burst(publisher, [eur], 20, start=120)
        assert await receive(layer, channel, 40) == list(range(100, 140)), "nothing of a left group arrives"
        pubsub = layer._get_layer().shards[0]._pubsub
        assert pubsub is not None
        for _ in range(50):  # the unsubscribe's confirmation went through handle_message
            if not pubsub.pending_unsubscribe_channels:
                break
            await asyncio.sleep(0.05)
        assert not pubsub.pending_unsubscribe_channels, pubsub.pending_unsubscribe_channels
        assert aapl.encode() not in pubsub.channels and aapl not in pubsub.channels
        msft = layer._get_layer()._get_group_channel_name(group_name("tick", "MSFT"))
        await publisher.publish(msft, msgpack.packb({"type": "tick", "i": 999}))
        assert await receive(layer, channel, 1) == [999], "a group joined between bursts is subscribed"
    finally:
        await layer.flush()


async def test_without_hiredis_every_message_takes_get_message(prefix: str, publisher: aioredis.Redis) -> None:
    layer = sharded(prefix, parser_class=_AsyncRESP3Parser)
    try:
        channel, channels = await joined(layer, ["AAPL", "EUR/USD"])
        shard = layer._get_layer().shards[0]
        await asyncio.sleep(0.2)
        assert reader_of(shard._pubsub.connection if shard._pubsub else None) is None
        await burst(publisher, channels, 50)
        assert await receive(layer, channel, 50) == list(range(50))
        assert shard.drained == 0, "the pure-Python parser has no reader to drain"
    finally:
        await layer.flush()


async def test_a_lost_connection_in_a_burst_is_a_lost_link_and_the_receiver_comes_back(
    prefix: str, publisher: aioredis.Redis
) -> None:
    layer = sharded(prefix, client_name=prefix)
    try:
        channel, channels = await joined(layer, ["AAPL"])
        shard = layer._get_layer().shards[0]
        await asyncio.sleep(0.2)
        await burst(publisher, channels, 10)
        assert await receive(layer, channel, 10) == list(range(10))
        ours = [c for c in await publisher.client_list() if c.get("name") == prefix]
        assert ours, "the layer's subscription connection is listed under its name"
        for client in ours:
            await publisher.client_kill_filter(_id=client["id"])
        # the receiver notices, and is back after RETRY_DELAY (no receive is cancelled
        # meanwhile: channels_redis unsubscribes a channel whose receive is cancelled)
        for _ in range(50):
            if not shard.link_up:
                break
            await asyncio.sleep(0.05)
        assert not shard.link_up, "the killed connection is a lost link"
        for _ in range(100):
            if shard.link_up:
                break
            await asyncio.sleep(0.05)
        assert shard.link_up, "the receiver did not come back after its connection was killed"
        await burst(publisher, channels, 10, start=10)
        assert await receive(layer, channel, 10) == list(range(10, 20))
    finally:
        await layer.flush()
