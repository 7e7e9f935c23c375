"""Hub fan-out and throttling with a fake clock and a fake channel layer (no I/O)."""

from __future__ import annotations

import asyncio
from typing import Any

from marketstream.codec import CODEC
from marketstream.connection import Connection
from marketstream.hub import Hub
from marketstream.store import MemoryStore
from marketstream.tick import EncodedTick

T = 10_000  # ms: long enough that the real interval task never fires during a test


class FakeLayer:
    def __init__(self) -> None:
        self.groups: dict[str, set[str]] = {}

    async def new_channel(self, prefix: str = "specific.") -> str:
        return prefix + "x"

    async def receive(self, channel: str) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError

    async def group_add(self, group: str, channel: str) -> None:
        self.groups.setdefault(group, set()).add(channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self.groups.get(group, set()).discard(channel)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def noop(frame: bytes) -> None:
    return None


def t(symbol: str, seq: int) -> EncodedTick:
    return EncodedTick(symbol, seq, b"", b"")


def conn() -> Connection:
    return Connection(CODEC["msgpack"], noop, max_pending=100)


def pending(c: Connection) -> list[tuple[str, int]]:
    return [(x.symbol, x.seq) for x in c.outbox.take_ticks()]


async def make_hub() -> tuple[Hub, FakeLayer, Clock]:
    layer, clock = FakeLayer(), Clock()
    hub = Hub(layer, MemoryStore(), "tick", clock=clock)
    await hub.start()
    return hub, layer, clock


async def test_unthrottled_ticks_reach_every_subscriber_once_in_order() -> None:
    hub, layer, _ = await make_hub()
    a, b = conn(), conn()
    await hub.join(hub.add(a, ["AAPL", "MSFT"], 0))
    await hub.join(hub.add(b, ["AAPL"], 0))
    assert layer.groups == {"tick.AAPL": {"specific.x"}, "tick.MSFT": {"specific.x"}}, "one group member per process"
    for seq in (1, 2, 2, 3):
        hub.on_tick(t("AAPL", seq))
    hub.on_tick(t("MSFT", 1))
    hub.on_tick(t("IBM", 1))
    assert pending(a) == [("AAPL", 1), ("AAPL", 2), ("AAPL", 3), ("MSFT", 1)]
    assert pending(b) == [("AAPL", 1), ("AAPL", 2), ("AAPL", 3)]
    await hub.stop()


async def test_throttled_subscription_gets_the_latest_tick_at_the_interval_end() -> None:
    hub, _, _clock = await make_hub()
    a = conn()
    hub.add(a, ["AAPL"], T)
    interval = hub.intervals[T]
    for seq in range(1, 6):
        hub.on_tick(t("AAPL", seq))
    assert pending(a) == [], "nothing before the interval ends"
    hub._fire(interval)
    assert pending(a) == [("AAPL", 5)], "latest value wins"
    hub._fire(interval)
    assert pending(a) == [], "no new tick, nothing sent"
    await hub.stop()


async def test_a_subscriber_served_recently_waits_until_due() -> None:
    hub, _, clock = await make_hub()
    a = conn()
    hub.add(a, ["AAPL"], T)
    interval = hub.intervals[T]
    a.sent_at["AAPL"] = clock.now  # its snapshot went out just now
    hub.on_tick(t("AAPL", 1))
    hub._fire(interval)
    assert pending(a) == []
    clock.now += T / 1000 / 2
    hub.on_tick(t("AAPL", 2))
    hub._fire(interval)
    assert pending(a) == [], "half an interval after the snapshot: not yet"
    clock.now += T / 1000 / 2
    hub._fire(interval)
    assert pending(a) == [("AAPL", 2)], "due: the newest tick, though none came in this interval"
    assert a in hub.buckets["AAPL"][T].subscribers and "AAPL" not in a.sent_at


async def test_leaving_throttle_zero_counts_as_a_delivery_now() -> None:
    hub, _, clock = await make_hub()
    a = conn()
    hub.add(a, ["AAPL"], 0)
    hub.on_tick(t("AAPL", 1))
    assert pending(a) == [("AAPL", 1)]
    hub.add(a, ["AAPL"], T)
    hub.on_tick(t("AAPL", 2))
    hub._fire(hub.intervals[T])
    assert pending(a) == []
    clock.now += T / 1000
    hub._fire(hub.intervals[T])
    assert pending(a) == [("AAPL", 2)]
    await hub.stop()


async def test_moving_between_throttles_keeps_the_spacing() -> None:
    hub, _, clock = await make_hub()
    a = conn()
    hub.add(a, ["AAPL"], T)
    hub.on_tick(t("AAPL", 1))
    hub._fire(hub.intervals[T])
    assert pending(a) == [("AAPL", 1)]
    hub.add(a, ["AAPL"], 2 * T)
    hub.on_tick(t("AAPL", 2))
    clock.now += T / 1000
    hub._fire(hub.intervals[2 * T])
    assert pending(a) == [], "2T have not passed since the last delivery"
    clock.now += T / 1000
    hub._fire(hub.intervals[2 * T])
    assert pending(a) == [("AAPL", 2)]
    await hub.stop()


async def test_subscribers_of_one_symbol_at_different_throttles() -> None:
    hub, _, _clock = await make_hub()
    fast, slow = conn(), conn()
    hub.add(fast, ["EUR/USD"], 0)
    hub.add(slow, ["EUR/USD"], T)
    for seq in (1, 2, 3):
        hub.on_tick(t("EUR/USD", seq))
    hub._fire(hub.intervals[T])
    assert pending(fast) == [("EUR/USD", 1), ("EUR/USD", 2), ("EUR/USD", 3)]
    assert pending(slow) == [("EUR/USD", 3)]
    await hub.stop()


async def test_resubscribe_changes_the_throttle_without_duplicates() -> None:
    hub, _, _clock = await make_hub()
    a = conn()
    hub.add(a, ["AAPL"], 0)
    hub.on_tick(t("AAPL", 1))
    hub.add(a, ["AAPL"], T)
    hub.on_tick(t("AAPL", 2))
    hub.on_tick(t("AAPL", 3))
    assert pending(a) == [("AAPL", 1)]
    hub._fire(hub.intervals[T])
    hub.add(a, ["AAPL"], 0)
    hub.on_tick(t("AAPL", 3))
    hub.on_tick(t("AAPL", 4))
    assert pending(a) == [("AAPL", 3), ("AAPL", 4)]
    assert a.subscriptions == {"AAPL": 0}
    assert "AAPL" not in hub.buckets, "the empty throttled bucket is gone"
    await hub.stop()


async def test_remove_stops_delivery_and_leaves_the_group_when_last() -> None:
    hub, layer, _ = await make_hub()
    a, b = conn(), conn()
    await hub.join(hub.add(a, ["AAPL"], 0))
    await hub.join(hub.add(b, ["AAPL"], T))
    assert hub.remove(a, ["AAPL", "MSFT"]) == ["AAPL"]
    hub.on_tick(t("AAPL", 1))
    assert pending(a) == []
    assert "AAPL" in hub.joined
    hub.detach(b)
    await asyncio.sleep(0)  # the group_discard runs as a task
    await asyncio.sleep(0)
    assert "AAPL" not in hub.joined
    assert layer.groups["tick.AAPL"] == set()
    assert hub.zero == {} and hub.buckets == {}
    await hub.stop()


async def test_rejoin_after_leave() -> None:
    hub, layer, _ = await make_hub()
    a = conn()
    await hub.join(hub.add(a, ["AAPL"], 0))
    hub.remove(a, ["AAPL"])
    await hub.join(hub.add(a, ["AAPL"], 0))
    for _ in range(3):
        await asyncio.sleep(0)
    assert "AAPL" in hub.joined and layer.groups["tick.AAPL"] == {"specific.x"}
    await hub.stop()


async def test_slow_connection_is_killed_with_1013() -> None:
    hub, _, clock = await make_hub()
    killed: list[int] = []
    a = Connection(CODEC["msgpack"], noop, max_pending=2, kill=killed.append)
    hub.add(a, ["AAPL"], 0)
    a.busy_since = clock.now  # its writer is stuck in a send
    clock.now += hub.slow_client_timeout + 1
    hub.on_tick(t("AAPL", 1))
    await hub._flush()
    assert killed == [1013]
    assert a.closed
    await hub.stop()


async def test_a_waiting_subscriber_gets_the_newest_tick_not_the_previous_one() -> None:
    hub, _, clock = await make_hub()
    a, b = conn(), conn()
    hub.add(a, ["AAPL"], T)
    hub.add(b, ["AAPL"], T)
    interval = hub.intervals[T]
    a.sent_at["AAPL"] = clock.now  # a got its snapshot just now
    hub.on_tick(t("AAPL", 1))
    hub._fire(interval)
    assert pending(a) == [] and pending(b) == [("AAPL", 1)]
    clock.now += T / 1000
    hub.on_tick(t("AAPL", 2))
    hub._fire(interval)
    assert pending(a) == [("AAPL", 2)], "the newest tick, not the previous interval's"
    assert pending(b) == [("AAPL", 2)]
    clock.now += T / 1000
    hub.on_tick(t("AAPL", 3))
    hub._fire(interval)
    assert pending(a) == [("AAPL", 3)], "and it stays in step afterwards"
    assert not hub.buckets["AAPL"][T].waiting
    await hub.stop()


class QueueLayer(FakeLayer):
    """A layer whose hub channel yields the messages put into `inbox`."""

    def __init__(self) -> None:
        super().__init__()
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive(self, channel: str) -> dict[str, Any]:
        return await self.inbox.get()


async def test_a_malformed_message_is_dropped_and_the_next_tick_still_arrives() -> None:
    layer = QueueLayer()
    hub = Hub(layer, MemoryStore(), "tick", clock=Clock())
    await hub.start()
    a = conn()
    hub.add(a, ["AAPL"], 0)
    layer.inbox.put_nowait({"type": "tick", "s": "AAPL"})  # no seq, no bytes
    layer.inbox.put_nowait(t("AAPL", 1).to_message())
    for _ in range(5):
        await asyncio.sleep(0)
    assert hub.bad_messages == 1
    assert a.outbox.last_seq == {"AAPL": 1}, "the next tick reached the outbox at once, not after a pause"
    await hub.stop()


async def test_one_failing_connection_does_not_starve_the_others_in_a_flush() -> None:
    hub, _, _ = await make_hub()
    sent: list[bytes] = []

    async def send(frame: bytes) -> None:
        sent.append(frame)

    def broken() -> bool:
        raise RuntimeError("boom")

    bad = Connection(CODEC["msgpack"], noop, max_pending=10, writable=broken)
    good = Connection(CODEC["msgpack"], send, max_pending=10, writable=lambda: True)
    hub.add(bad, ["AAPL"], 0)
    hub.add(good, ["AAPL"], 0)
    hub.on_tick(t("AAPL", 1))
    await hub._flush()
    assert len(sent) == 1 and not good.dirty and not bad.dirty
    await hub.stop()
