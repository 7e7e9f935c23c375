"""Throttle: conflated once per symbol and throttle; delivered at interval ends to the
subscribers that are due, never earlier than `throttle` after their last delivery."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterable

import pytest

from marketstream.core import throttle as throttle_module
from marketstream.core.codec import CODEC
from marketstream.core.connection import Connection
from marketstream.core.fanout import Fanout, Put
from marketstream.core.limits import Limits
from marketstream.core.outbox import Outbox
from marketstream.core.throttle import NEVER, Interval, Throttle, sleep_until
from marketstream.core.tick import EncodedTick
from tests.unit.core.fakes import Clock, Peer, settle, tick

T = 10_000  # ms: long enough that the real interval task never fires during a test


def conn(peer: Peer | None = None) -> Connection:
    return Connection(CODEC["msgpack"], (peer or Peer()).send, Limits(max_pending=100))


def pending(c: Connection) -> list[tuple[str, int]]:
    return [(x.symbol, x.seq) for x in c.outbox.take_ticks()]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def throttle(clock: Clock) -> AsyncIterator[Throttle]:
    th = Throttle(Fanout(clock, 0.0, 5.0), clock)
    yield th
    th.stop()
    th.fanout.stop()


async def test_throttled_subscription_gets_the_latest_tick_at_the_interval_end(throttle: Throttle) -> None:
    a = conn()
    throttle.route(a, "AAPL", T)
    interval = throttle.intervals[T]
    for seq in range(1, 6):
        throttle.offer(tick("AAPL", seq))
    assert pending(a) == [], "nothing before the interval ends"
    throttle.fire(interval)
    assert pending(a) == [("AAPL", 5)], "latest value wins"
    throttle.fire(interval)
    assert pending(a) == [], "no new tick, nothing sent"


async def test_a_subscriber_served_recently_waits_until_due(throttle: Throttle, clock: Clock) -> None:
    a = conn()
    throttle.route(a, "AAPL", T)
    interval = throttle.intervals[T]
    a.sent_at["AAPL"] = clock.now  # its snapshot went out just now
    throttle.offer(tick("AAPL", 1))
    throttle.fire(interval)
    assert pending(a) == []
    clock.now += T / 1000 / 2
    throttle.offer(tick("AAPL", 2))
    throttle.fire(interval)
    assert pending(a) == [], "half an interval after the snapshot: not yet"
    clock.now += T / 1000 / 2
    throttle.fire(interval)
    assert pending(a) == [("AAPL", 2)], "due: the newest tick, though none came in this interval"
    assert a in throttle.buckets["AAPL"][T].subscribers and "AAPL" not in a.sent_at


async def test_a_waiting_subscriber_gets_the_newest_tick_not_the_previous_one(throttle: Throttle, clock: Clock) -> None:
    a, b = conn(), conn()
    throttle.route(a, "AAPL", T)
    throttle.route(b, "AAPL", T)
    interval = throttle.intervals[T]
    a.sent_at["AAPL"] = clock.now  # a got its snapshot just now
    throttle.offer(tick("AAPL", 1))
    throttle.fire(interval)
    assert pending(a) == [] and pending(b) == [("AAPL", 1)]
    clock.now += T / 1000
    throttle.offer(tick("AAPL", 2))
    throttle.fire(interval)
    assert pending(a) == [("AAPL", 2)], "the newest tick, not the previous interval's"
    assert pending(b) == [("AAPL", 2)]
    clock.now += T / 1000
    throttle.offer(tick("AAPL", 3))
    throttle.fire(interval)
    assert pending(a) == [("AAPL", 3)], "and it stays in step afterwards"
    assert not throttle.buckets["AAPL"][T].waiting


async def test_a_new_subscriber_without_a_snapshot_gets_the_last_tick_at_the_next_end(throttle: Throttle) -> None:
    a, b = conn(), conn()
    throttle.route(a, "AAPL", T)
    interval = throttle.intervals[T]
    throttle.offer(tick("AAPL", 1))
    throttle.fire(interval)
    assert pending(a) == [("AAPL", 1)]
    throttle.route(b, "AAPL", T)
    throttle.fire(interval)
    assert pending(b) == [("AAPL", 1)], "the bucket's last tick, since none came since"
    assert pending(a) == [], "a already had it"


async def test_buckets_are_per_symbol_and_throttle_and_one_interval_per_throttle(throttle: Throttle) -> None:
    a, b = conn(), conn()
    throttle.route(a, "AAPL", T)
    throttle.route(a, "MSFT", T)
    throttle.route(b, "AAPL", 2 * T)
    assert set(throttle.intervals) == {T, 2 * T}
    assert {s: set(b) for s, b in throttle.buckets.items()} == {"AAPL": {T, 2 * T}, "MSFT": {T}}
    assert len(throttle.intervals[T].buckets) == 2
    throttle.offer(tick("AAPL", 1))
    throttle.offer(tick("IBM", 1))
    assert throttle.buckets["AAPL"][T].pending is throttle.buckets["AAPL"][2 * T].pending
    assert throttle.buckets["MSFT"][T].pending is None
    throttle.fire(throttle.intervals[T])
    assert pending(a) == [("AAPL", 1)] and pending(b) == []
    throttle.fire(throttle.intervals[2 * T])
    assert pending(b) == [("AAPL", 1)]


async def test_unroute_records_the_last_end_and_forgets_empty_buckets(throttle: Throttle, clock: Clock) -> None:
    a, b = conn(), conn()
    throttle.route(a, "AAPL", T)
    throttle.route(b, "AAPL", T)
    interval = throttle.intervals[T]
    throttle.offer(tick("AAPL", 1))
    throttle.fire(interval)
    fired = clock.now
    clock.now += 3
    throttle.unroute(a, "AAPL", T)
    assert a.sent_at == {"AAPL": fired}, "the last delivery was at the interval's last end"
    throttle.unroute(b, "AAPL", T)
    assert throttle.buckets == {} and interval.buckets == {}
    throttle.unroute(b, "AAPL", T)  # not routed: nothing happens
    throttle.unroute(b, "MSFT", 2 * T)


async def test_unroute_of_a_waiting_subscriber_keeps_its_sent_at(throttle: Throttle, clock: Clock) -> None:
    a = conn()
    throttle.route(a, "AAPL", T)
    a.sent_at["AAPL"] = 42.0
    throttle.unroute(a, "AAPL", T)
    assert a.sent_at == {"AAPL": 42.0}
    assert throttle.buckets == {}


async def test_an_interval_task_ends_when_its_last_bucket_is_gone() -> None:
    th = Throttle(Fanout(time.monotonic, 0.0, 5.0), time.monotonic)
    a = conn()
    th.route(a, "AAPL", 20)
    task = th.intervals[20].task
    assert task is not None
    th.unroute(a, "AAPL", 20)
    await asyncio.wait_for(task, 1)
    assert th.intervals == {}


async def test_the_interval_fires_on_its_own_latest_value_wins() -> None:
    peer = Peer()
    th = Throttle(Fanout(time.monotonic, 0.0, 5.0), time.monotonic)
    a = Connection(CODEC["msgpack"], peer.send, Limits(), writable=peer.writable)
    th.route(a, "AAPL", 50)
    for seq in (1, 2, 3):
        th.offer(tick("AAPL", seq))
    assert peer.frames == []
    await asyncio.sleep(0.2)
    assert peer.ticks() == [("AAPL", 3)]
    th.offer(tick("AAPL", 4))
    await asyncio.sleep(0.2)
    assert peer.ticks() == [("AAPL", 4)]
    th.stop()


async def test_interval_ends_are_at_least_the_throttle_apart() -> None:
    peer = Peer()
    th = Throttle(Fanout(time.monotonic, 0.0, 5.0), time.monotonic)
    fires: list[float] = []
    real_fire = th.fire

    def fire(interval: Interval) -> None:
        fires.append(time.monotonic())
        real_fire(interval)

    th.fire = fire  # type: ignore[method-assign]
    a = Connection(CODEC["msgpack"], peer.send, Limits(), writable=lambda: True)
    th.route(a, "AAPL", 30)
    deadline = time.monotonic() + 0.3
    seq = 0
    while time.monotonic() < deadline:
        seq += 1
        th.offer(tick("AAPL", seq))
        await asyncio.sleep(0.002)
    th.stop()
    assert len(fires) >= 4
    gaps = [b - a for a, b in itertools.pairwise(fires)]
    assert min(gaps) >= 0.030, gaps
    seqs = [s for _, s in peer.ticks()]
    assert len(seqs) >= len(fires) - 1 and seqs == sorted(set(seqs)) and seqs[-1] <= seq


async def test_a_failing_fire_does_not_stop_the_interval() -> None:
    peer = Peer()
    fanout = Fanout(time.monotonic, 0.0, 5.0)
    th = Throttle(fanout, time.monotonic)
    a = Connection(CODEC["msgpack"], peer.send, Limits(), writable=peer.writable)
    failures = [RuntimeError("boom")]
    real_put = fanout.put

    def put(targets: Iterable[Connection], tick: EncodedTick, put: Put = Outbox.put) -> None:
        if failures:
            raise failures.pop()
        real_put(targets, tick, put)

    fanout.put = put  # type: ignore[method-assign]
    th.route(a, "AAPL", 20)
    th.offer(tick("AAPL", 1))
    await asyncio.sleep(0.1)
    assert failures == []
    th.offer(tick("AAPL", 2))
    await asyncio.sleep(0.1)
    assert peer.ticks() == [("AAPL", 2)]
    assert th.intervals[20].task is not None and not th.intervals[20].task.done()
    th.stop()


async def testsleep_until_checks_its_own_clock() -> None:
    readings = iter([0.0, 0.005, 0.009, 0.010])
    calls: list[float] = []

    def clock() -> float:
        calls.append(next(readings))
        return calls[-1]

    await sleep_until(clock, 0.010)
    assert calls == [0.0, 0.005, 0.009, 0.010], "woken early by the loop's timers: sleeps again"


async def test_stop_cancels_the_interval_tasks(throttle: Throttle) -> None:
    throttle.route(conn(), "AAPL", T)
    task = throttle.intervals[T].task
    assert task is not None
    throttle.stop()
    await settle()
    assert task.cancelled()


def test_constants() -> None:
    assert NEVER == float("-inf")
    assert 0 < throttle_module.TIMER_SLACK <= 0.01
