"""The channel layer of hubs and feeds with Redis: channels_redis's pub/sub layer, sharded
by symbol.

channels_redis picks a group's shard with its own hash of the group's channel name
(`channels_redis.utils._consistent_hash`: crc32 into 4096 slots, split in ranges). That is
not our rule, and publish.lua PUBLISHes each tick on the shard that keeps its symbol: the
hub must subscribe there. So `ShardedPubSubChannelLayer` routes a group channel by the
symbol in its name (`shards.shard_of`), decided once per join and per publish, never per
delivered tick.

Receiving is channels_redis's loop with one change, for speed: after each message that
`get_message` returns, `ShardConnection._drain` takes every further reply redis-py's
hiredis reader already holds (a feed's batch arrives in one read) and puts the published
ones straight on the layer's queues, instead of one `get_message` (about 40 µs) each.

Two more changes, both for a shard that goes away:
- `new_channel` subscribes to nothing in Redis: the hub's own channel only collects its
  groups' messages (nothing is ever sent to it), so a hub starts while a shard is down;
- each shard's receiver (`ShardConnection`) logs one line when its subscription
  connection is lost and one when it is back (channels_redis logs a traceback a second),
  says whether it is up (`link_up`, read by /healthz), and forgets a channel left while
  the shard is down instead of waiting for it. redis-py subscribes again to every channel
  of the connection when it reconnects (`PubSub.on_connect`): what was published
  meanwhile is lost, and hubs fill the gap from history (`core.inbound`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer, RedisSingleShardConnection
from channels_redis.utils import _wrap_close, decode_hosts
from redis._parsers.hiredis import NOT_ENOUGH_DATA

from marketstream.adapters.shards import shard_of
from marketstream.adapters.transport import symbol_of_group

log = logging.getLogger(__name__)

RETRY_DELAY = 1.0  # seconds between reconnection attempts of a lost subscription connection
UNSUBSCRIBE_TIMEOUT = 2.0  # seconds an unsubscribe waits for a shard before forgetting the channel locally
GROUP_MARK = "__group__"

LinkListener = Callable[[int, bool, str], None]  # (shard index, up, error text)


class ShardConnection(RedisSingleShardConnection):
    """channels_redis's connection to one shard, with its state and quiet reconnection."""

    def __init__(self, host: dict[str, Any], channel_layer: Any, index: int) -> None:
        super().__init__(host, channel_layer)
        self.index = index
        self.link_up = True
        self.link_error = ""
        self.down_since = 0.0  # monotonic time the link was lost
        self.listener: LinkListener | None = None
        self.quiet = False  # a reconnection asked for (`reconnect`): not an outage
        self.drained = 0  # messages taken by `_drain` (not by `get_message`): tests and loadtest.receive

    async def _do_receiving(self) -> None:
        """channels_redis's receive loop; a lost connection is one line, not a traceback
        a second, and its return another."""
        while True:
            try:
                pubsub = self._pubsub
                if pubsub and pubsub.subscribed:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                    if not self.link_up:
                        self._changed(True, "")
                    self._receive_message(message)
                    if message is not None:
                        await self._drain(pubsub)
                else:
                    if not self.link_up:  # nothing subscribed here any more: nothing to lose
                        self.link_up, self.link_error = True, ""
                    await asyncio.sleep(0.1)
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except (redis.RedisError, OSError) as exc:
                if self.quiet:  # the connection `reconnect` dropped: connect again at once
                    await asyncio.sleep(0.05)
                    continue
                if self.link_up:
                    self._changed(False, f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(RETRY_DELAY)
            except Exception:
                log.exception("layer: unexpected failure receiving from shard %d", self.index)
                await asyncio.sleep(RETRY_DELAY)

    async def _drain(self, pubsub: Any) -> None:
        """Take every reply the connection's reader already holds, without a read or an await
        for each: a feed's batch arrives as several messages in one read, and redis-py's
        `get_message` costs about 40 µs a message (its retry wrapper, a timeout, a logger
        lookup and a metrics hook each time). Published messages go straight to the
        layer's queues; anything else (a subscribe or unsubscribe confirmation) through
        redis-py's `handle_message`, which keeps its subscription state.

        Needs redis-py's hiredis parser (`reader_of`); with another parser there is nothing
        to drain and every message takes `get_message`. tests/adapters/test_layer.py fails
        loudly when a redis-py release moves what this relies on.
        """
        reader = reader_of(pubsub.connection)
        if reader is None:
            return
        receive = self._receive_data
        while (reply := reader.gets()) is not NOT_ENOUGH_DATA:
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                receive(reply[1], reply[2])
                self.drained += 1
            elif isinstance(reply, ConnectionError):  # what redis-py's read_response raises
                raise reply
            elif isinstance(reply, Exception):  # an error reply to a (un)subscribe: no message is lost
                log.warning("layer: shard %d answered %s", self.index, reply)
            else:
                self._receive_message(await pubsub.handle_message(reply, ignore_subscribe_messages=True))

    def _receive_data(self, name: bytes, data: bytes) -> None:
        """channels_redis's `_receive_message` for a published message's channel and data."""
        layer = self.channel_layer
        channel = name.decode()
        queue = layer.channels.get(channel)
        if queue is not None:
            queue.put_nowait(data)
            return
        members = layer.groups.get(channel)
        if members:
            channels = layer.channels
            for member in members:
                queue = channels.get(member)
                if queue is not None:
                    queue.put_nowait(data)

    def _changed(self, up: bool, error: str) -> None:
        """Note a lost or returned link: logged here unless a listener (the hub's shard
        monitor, which logs the shard's state in one line) is told."""
        if self.quiet:  # back from a reconnection asked for
            self.quiet, self.link_up, self.link_error = False, up, error
            return
        now = time.monotonic()
        level = logging.DEBUG if self.listener is not None else logging.WARNING
        if up:
            log.log(
                level,
                "layer: subscriptions on shard %d are back after %.1f s (%d channels subscribed again; "
                "what was published meanwhile is filled from history)",
                self.index,
                now - self.down_since,
                len(self._subscribed_to),
            )
        else:
            self.down_since = now
            log.log(
                level,
                "layer: lost the subscription connection to shard %d (%s); reconnecting every %.0f s",
                self.index,
                error,
                RETRY_DELAY,
            )
        self.link_up, self.link_error = up, error
        if self.listener is not None:
            self.listener(self.index, up, error)

    async def unsubscribe(self, channel: str) -> None:
        """Unsubscribe; on a shard that does not answer, forget the channel here (it is not
        subscribed again on reconnection)."""
        async with self._lock:
            if channel not in self._subscribed_to:
                return
            self._subscribed_to.discard(channel)
            pubsub = self._pubsub
            if pubsub is None:
                return
            if self.link_up:
                try:
                    await asyncio.wait_for(pubsub.unsubscribe(channel), UNSUBSCRIBE_TIMEOUT)
                    return
                except (redis.RedisError, OSError, TimeoutError):
                    pass
            for name in (channel, channel.encode()):
                pubsub.channels.pop(name, None)
                pubsub.pending_unsubscribe_channels.discard(name)

    @property
    def subscribed(self) -> bool:
        """Whether a channel of this shard is subscribed (else there is no link to lose)."""
        return bool(self._subscribed_to)

    async def reconnect(self) -> None:
        """Drop the subscription connection: the receiver connects again and subscribes to
        every channel again (after a link that may have silently lost messages). `link_up`
        is false until it has, without a log line or a word to the listener."""
        pubsub = self._pubsub
        if pubsub is not None and pubsub.connection is not None:
            self.quiet, self.link_up = True, False
            await pubsub.connection.disconnect()


def reader_of(connection: Any) -> Any:
    """The hiredis reader of a redis-py asyncio connection, or None (another parser, no
    connection): its `gets()` returns the next complete reply it holds, or
    `NOT_ENOUGH_DATA`."""
    reader = getattr(getattr(connection, "_parser", None), "_reader", None)
    return reader if hasattr(reader, "gets") else None


class ShardedLoopLayer(RedisPubSubLoopLayer):
    """channels_redis's per-loop pub/sub layer with groups routed by symbol."""

    def __init__(self, hosts: Any = None, **kwargs: Any) -> None:
        super().__init__(hosts, **kwargs)
        self._shards = [ShardConnection(host, self, i) for i, host in enumerate(decode_hosts(hosts))]

    @property
    def shards(self) -> list[ShardConnection]:
        return self._shards

    def _get_shard(self, channel_or_group_name: str) -> ShardConnection:
        shards = self._shards
        if len(shards) == 1:
            return shards[0]
        return shards[shard_of_channel(channel_or_group_name, len(shards))]

    async def new_channel(self, prefix: str = "specific.") -> str:
        """A process-local channel that collects its groups' messages; nothing in Redis."""
        channel = f"{self.prefix}{prefix}{uuid.uuid4().hex}"
        self.channels[channel] = asyncio.Queue()
        return channel

    def watch(self, listener: LinkListener) -> None:
        """Call `listener(shard, up, error)` whenever a shard's subscription link changes."""
        for shard in self._shards:
            shard.listener = listener


def shard_of_channel(name: str, n: int) -> int:
    """The shard of a layer channel: a group's by the symbol in its name (`tick.AAPL` and
    `bars.AAPL` are AAPL's), any other by the whole name."""
    at = name.find(GROUP_MARK)
    if at < 0:
        return shard_of(name, n)
    symbol = symbol_of_group(name[at + len(GROUP_MARK) :])
    return shard_of(symbol, n)


class ShardedPubSubChannelLayer(RedisPubSubChannelLayer):
    """`channels_redis.pubsub.RedisPubSubChannelLayer` whose groups live on their
    symbol's shard (CHANNEL_LAYERS backend with REDIS_URL)."""

    def _get_layer(self) -> ShardedLoopLayer:
        loop = asyncio.get_running_loop()
        try:
            layer: ShardedLoopLayer = self._layers[loop]
        except KeyError:
            layer = ShardedLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
        return layer
