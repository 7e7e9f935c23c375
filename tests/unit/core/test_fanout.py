"""Fanout: unthrottled routes, one flush per loop turn, direct sends when the socket
takes data, a writer task when it does not, and 1013 for a client behind for too long."""

from __future__ import annotations

import asyncio

import pytest

from marketstream.core.closes import Close
from marketstream.core.codec import CODEC
from marketstream.core.connection import Connection
from marketstream.core.fanout import Fanout
from marketstream.core.limits import Limits
from marketstream.core.outbox import Outbox
from tests.unit.core.fakes import Clock, Peer, settle, tick

TIMEOUT = 5.0


def make(clock: Clock | None = None, flush_delay: float = 0.0) -> Fanout:
    return Fanout(clock or Clock(), flush_delay, TIMEOUT)


def connection(peer: Peer, max_pending: int = 100, clock: Clock | None = None) -> Connection:
    return Connection(
        CODEC["msgpack"], peer.send, Limits(max_pending=max_pending), "s", peer.closer, peer.writable, clock or Clock()
    )


async def noop(frame: bytes) -> None:
    return None


async def test_routes_are_kept_per_symbol_and_forgotten_when_empty() -> None:
    fanout = make()
    a, b = connection(Peer()), connection(Peer())
    fanout.route(a, "AAPL")
    fanout.route(b, "AAPL")
    fanout.route(a, "AAPL")
    assert fanout.routes == {"AAPL": {a, b}}
    fanout.unroute(a, "AAPL")
    fanout.unroute(a, "MSFT")
    assert fanout.routes == {"AAPL": {b}}
    fanout.unroute(b, "AAPL")
    assert fanout.routes == {}


async def test_deliver_reaches_the_subscribers_of_the_symbol_only() -> None:
    fanout = make()
    a, b = connection(Peer()), connection(Peer())
    fanout.route(a, "AAPL")
    fanout.route(b, "MSFT")
    fanout.deliver(tick("AAPL", 1))
    fanout.deliver(tick("IBM", 1))
    assert [(t.symbol, t.seq) for t in a.outbox.ticks] == [("AAPL", 1)]
    assert not b.outbox


async def test_ticks_of_one_loop_turn_leave_in_one_frame_sent_directly() -> None:
    fanout = make()
    peer = Peer()
    a = connection(peer)
    fanout.route(a, "AAPL")
    for seq in (1, 2, 3):
        fanout.deliver(tick("AAPL", seq))
    assert a.dirty and fanout._dirty == [a], "marked once"
    await settle()
    assert [f["type"] for f in peer.frames] == ["ticks"]
    assert peer.ticks() == [("AAPL", 1), ("AAPL", 2), ("AAPL", 3)]
    assert not a.dirty and a._writer is None, "sent by the flush itself: no task"


async def test_a_tick_not_taken_does_not_mark_the_connection() -> None:
    fanout = make()
    a = connection(Peer())
    a.outbox.put(tick("AAPL", 5))
    fanout.put([a], tick("AAPL", 4))
    assert not a.dirty and fanout._dirty == []
    assert not fanout._scheduled


async def test_put_latest_conflates_in_the_outbox() -> None:
    fanout = make()
    peer = Peer()
    a = connection(peer)
    fanout.put([a], tick("AAPL", 1), Outbox.put_latest)
    fanout.put([a], tick("AAPL", 2), Outbox.put_latest)
    await settle()
    assert peer.ticks() == [("AAPL", 2)]


async def test_a_socket_that_does_not_take_data_gets_a_writer() -> None:
    fanout = make()
    peer = Peer(writable=False)
    a = connection(peer)
    fanout.route(a, "AAPL")
    fanout.deliver(tick("AAPL", 1))
    await asyncio.sleep(0)  # the flush round runs in the loop callback itself
    assert a._writer is not None
    await settle()
    assert peer.ticks() == [("AAPL", 1)]
    assert a._writer is None  # and lets go of its writer once the outbox is empty


async def test_flush_delay_waits_before_sending() -> None:
    fanout = make(flush_delay=0.05)
    peer = Peer()
    a = connection(peer)
    fanout.route(a, "AAPL")
    fanout.deliver(tick("AAPL", 1))
    await settle()
    assert peer.frames == []
    fanout.deliver(tick("AAPL", 2))
    await asyncio.sleep(0.1)
    await settle()
    assert peer.ticks() == [("AAPL", 1), ("AAPL", 2)], "both in one frame"


async def test_slow_connection_is_killed_with_1013() -> None:
    clock = Clock()
    fanout = make(clock)
    killed: list[int] = []
    a = Connection(CODEC["msgpack"], noop, Limits(max_pending=2), closer=lambda code, reason: killed.append(code))
    fanout.route(a, "AAPL")
    a.busy_since = clock.now  # its writer is stuck in a send
    clock.now += fanout.slow_client_timeout + 1
    fanout.deliver(tick("AAPL", 1))
    await fanout._flush()
    assert killed == [1013]
    assert a.closed


async def test_a_conflating_connection_is_closed_after_the_timeout_not_before() -> None:
    clock = Clock()
    fanout = make(clock)
    peer = Peer(writable=False)
    a = connection(peer, max_pending=1, clock=clock)
    fanout.route(a, "AAPL")
    a.behind_since = clock.now
    clock.now += TIMEOUT
    fanout.deliver(tick("AAPL", 1))
    await fanout._flush()
    assert not a.closed
    clock.now += 0.5
    fanout.deliver(tick("AAPL", 2))
    await fanout._flush()
    assert a.close_code == Close.TRY_AGAIN_LATER
    assert peer.closes == [(Close.TRY_AGAIN_LATER, "behind for more than 5 s")]


async def test_one_failing_connection_does_not_starve_the_others_in_a_flush() -> None:
    fanout = make()
    sent: list[bytes] = []

    async def send(frame: bytes) -> None:
        sent.append(frame)

    def broken() -> bool:
        raise RuntimeError("boom")

    bad = Connection(CODEC["msgpack"], noop, Limits(max_pending=10), writable=broken)
    good = Connection(CODEC["msgpack"], send, Limits(max_pending=10), writable=lambda: True)
    fanout.route(bad, "AAPL")
    fanout.route(good, "AAPL")
    fanout.deliver(tick("AAPL", 1))
    await fanout._flush()
    assert len(sent) == 1 and not good.dirty and not bad.dirty


async def test_stop_cancels_a_flush_in_progress() -> None:
    fanout = make()
    started = asyncio.Event()

    async def stuck(frame: bytes) -> None:
        started.set()
        await asyncio.Event().wait()

    a = Connection(CODEC["msgpack"], stuck, Limits(), writable=lambda: True)
    fanout.route(a, "AAPL")
    fanout.deliver(tick("AAPL", 1))
    await asyncio.wait_for(started.wait(), 1)
    assert len(fanout._flushing) == 1
    fanout.stop()
    await settle()
    assert fanout._flushing == set()


@pytest.mark.parametrize("delay", [0.0, 0.01])
async def test_one_flush_is_scheduled_however_many_ticks(delay: float) -> None:
    fanout = make(flush_delay=delay)
    peers = [Peer() for _ in range(3)]
    conns = [connection(p) for p in peers]
    for c in conns:
        fanout.route(c, "AAPL")
    for seq in range(1, 11):
        fanout.deliver(tick("AAPL", seq))
    assert fanout._scheduled and len(fanout._dirty) == 3
    await asyncio.sleep(delay + 0.05)
    assert all(len(p.frames) == 1 and len(p.frames[0]["ticks"]) == 10 for p in peers)
    assert not fanout._scheduled
