"""Connection: replies before ticks, ticks in order, held while a request is handled,
closed once, a failed send closes quietly, and only a backlog costs a writer task."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import orjson

from marketstream.core.closes import Close
from marketstream.core.codec import CODEC
from marketstream.core.connection import MAX_CONTROLS, Connection
from marketstream.core.limits import Limits
from marketstream.core.stats import Stats
from marketstream.core.tick import EncodedTick
from tests.unit.core.fakes import Clock, Peer, settle


def tick(symbol: str, seq: int) -> EncodedTick:
    return EncodedTick.encode(
        {"symbol": symbol, "seq": seq, "ts": 1, "price": 1.0, "size": 1.0, "bid": 1.0, "ask": 1.0}
    )


async def test_replies_leave_before_ticks_and_ticks_in_order() -> None:
    frames: list[dict[str, Any]] = []

    async def send(frame: bytes) -> None:
        frames.append(msgpack.unpackb(frame))

    conn = Connection(CODEC["msgpack"], send, Limits(max_pending=100))
    conn.outbox.put(tick("A", 1))
    conn.reply({"type": "pong", "id": 1})
    conn.outbox.put(tick("A", 2))
    await conn.drain()
    assert [m["type"] for m in frames] == ["pong", "ticks"]
    assert [t["seq"] for t in frames[1]["ticks"]] == [1, 2]
    assert conn.frames == 2 and conn.ticks_sent == 2
    conn.close(Close.GOING_AWAY)
    await conn.wait_closed()
    assert len(frames) == 2, "the writer task had nothing left to send"


async def test_a_held_connection_sends_nothing_until_released() -> None:
    frames: list[bytes] = []

    async def send(frame: bytes) -> None:
        frames.append(frame)

    conn = Connection(CODEC["msgpack"], send, Limits(max_pending=100))
    with conn.holding():
        conn.reply({"type": "ack"})
        await conn.drain()
        await settle()
        assert frames == []
        assert not conn.ready()
    await conn.drain()
    assert len(frames) == 1


async def test_holding_nests_and_release_wakes_the_writer() -> None:
    peer = Peer()
    conn = Connection(CODEC["msgpack"], peer.send, Limits())
    with conn.holding():
        with conn.holding():
            conn.reply({"type": "ack"})
        await settle()
        assert peer.frames == [], "still held by the outer request"
    await settle()
    assert peer.types() == ["ack"]


async def test_a_failed_send_closes_quietly() -> None:
    async def broken(frame: bytes) -> None:
        raise ConnectionResetError

    peer = Peer()
    conn = Connection(CODEC["msgpack"], broken, Limits(max_pending=10), closer=peer.closer)
    conn.reply({"type": "pong"})
    await conn.drain()
    assert conn.closed
    assert conn.close_code == Close.GOING_AWAY and peer.closes == [], "the peer is gone: no close frame"
    assert conn.frames == 0 and conn.busy_since is None


async def test_a_client_that_lets_replies_pile_up_is_closed_once_with_1013() -> None:
    killed: list[int] = []
    stats = Stats()
    conn = Connection(
        CODEC["msgpack"],
        broken_never_called,
        Limits(max_pending=10),
        closer=lambda code, reason: killed.append(code),
        stats=stats,
    )
    with conn.holding():  # nothing leaves, as for a client whose socket is full
        for i in range(MAX_CONTROLS + 5):
            conn.reply({"type": "pong", "id": i})
        assert killed == [1013]
        assert conn.closed and len(conn.outbox.controls) == MAX_CONTROLS
    assert stats.closes == {1013: 1}


async def broken_never_called(frame: bytes) -> None:
    raise AssertionError("nothing is sent while the connection is held")


async def test_close_calls_the_closer_once_and_counts_it() -> None:
    peer = Peer()
    stats = Stats()
    conn = Connection(CODEC["msgpack"], peer.send, Limits(), session="s1", closer=peer.closer, stats=stats)
    assert not conn.closed
    conn.close(Close.TOO_BIG, "frame of 70000 bytes")
    conn.close(Close.TRY_AGAIN_LATER, "again")
    assert peer.closes == [(Close.TOO_BIG, "frame of 70000 bytes")]
    assert conn.close_code == Close.TOO_BIG and stats.closes == {Close.TOO_BIG: 1}


async def test_nothing_is_sent_after_close() -> None:
    peer = Peer()
    conn = Connection(CODEC["msgpack"], peer.send, Limits())
    conn.outbox.put(tick("A", 1))
    conn.close(Close.NORMAL)
    conn.reply({"type": "pong"})
    await conn.drain()
    await settle()
    assert peer.frames == [] and not conn.outbox.controls


async def test_close_cancels_a_writer_stuck_in_a_send() -> None:
    started = asyncio.Event()

    async def stuck(frame: bytes) -> None:
        started.set()
        await asyncio.Event().wait()

    conn = Connection(CODEC["msgpack"], stuck, Limits())
    conn.reply({"type": "pong"})
    await asyncio.wait_for(started.wait(), 1)
    assert conn.busy_since is not None
    conn.close(Close.TRY_AGAIN_LATER, "stuck")
    await asyncio.wait_for(conn.wait_closed(), 1)
    assert conn.busy_since is None


async def test_an_idle_connection_has_no_writer_task() -> None:
    conn = Connection(CODEC["msgpack"], Peer().send, Limits())
    conn.wake()
    assert conn._writer is None
    conn.reply({"type": "pong"})
    assert conn._writer is not None
    task = conn._writer
    await settle()
    assert task.done(), "the writer ends once the outbox is empty"
    assert conn._writer is None, "and the connection lets go of it"


async def test_ready_needs_a_writable_socket_and_no_send_in_progress() -> None:
    peer = Peer(writable=False)
    conn = Connection(CODEC["msgpack"], peer.send, Limits(), writable=peer.writable)
    assert not conn.ready()
    peer.is_writable = True
    assert conn.ready()
    conn.busy_since = 1.0
    assert not conn.ready()
    conn.busy_since = None
    with conn.holding():
        assert not conn.ready()
    conn.close(Close.NORMAL)
    assert not conn.ready()


async def test_without_writable_every_frame_goes_through_the_writer() -> None:
    assert not Connection(CODEC["msgpack"], Peer().send, Limits()).ready()


async def test_direct_drain_stops_when_the_socket_fills_and_the_writer_sends_the_rest() -> None:
    peer = Peer()
    conn = Connection(CODEC["msgpack"], peer.send, Limits(), writable=peer.writable)

    async def send(frame: bytes) -> None:
        await peer.send(frame)
        peer.is_writable = False  # the first frame filled the socket

    conn._send = send
    conn.outbox.add_control(conn.codec.message({"type": "pong"}))
    conn.outbox.put(tick("A", 1))
    await conn.drain(direct=True)
    assert peer.types() == ["pong"], "the flush sends only while the socket takes data at once"
    await settle()
    assert peer.types() == ["pong", "ticks"]
    assert conn.frames == 2 and conn.ticks_sent == 1


async def test_drain_does_nothing_while_a_send_is_in_progress() -> None:
    peer = Peer()
    conn = Connection(CODEC["msgpack"], peer.send, Limits())
    conn.outbox.put(tick("A", 1))
    conn.busy_since = 1.0
    await conn.drain()
    assert peer.frames == [] and len(conn.outbox) == 1


async def test_json_connection_sends_json() -> None:
    frames: list[bytes] = []

    async def send(frame: bytes) -> None:
        frames.append(frame)

    conn = Connection(CODEC["json"], send, Limits())
    conn.reply({"type": "pong", "id": "p"})
    conn.outbox.put(tick("A", 3))
    await conn.drain()
    assert [orjson.loads(f) for f in frames] == [
        {"type": "pong", "id": "p"},
        {"type": "ticks", "ticks": [tick("A", 3).decode()]},
    ]


async def test_behind_since_is_set_by_conflation_and_cleared_once_caught_up() -> None:
    clock = Clock()
    peer = Peer()
    conn = Connection(CODEC["msgpack"], peer.send, Limits(max_pending=2), clock=clock)
    for seq in range(1, 4):
        conn.outbox.put(tick("A", seq))
    assert conn.outbox.conflations == 1

    async def slow(frame: bytes) -> None:
        assert conn.behind_since == 100.0
        clock.now += 1
        await peer.send(frame)

    conn._send = slow
    await conn.drain()
    assert peer.ticks() == [("A", 3)]
    assert conn.behind_since is None and conn.outbox.conflations == 0


def test_is_behind_after_the_timeout_only() -> None:
    conn = Connection(CODEC["msgpack"], Peer().send, Limits())
    assert not conn.is_behind(1000.0, 5.0)
    conn.behind_since = 100.0
    assert not conn.is_behind(105.0, 5.0)
    assert conn.is_behind(105.1, 5.0)
    conn.behind_since = None
    conn.busy_since = 100.0
    assert not conn.is_behind(105.0, 5.0)
    assert conn.is_behind(105.1, 5.0), "one send blocked for longer counts too"


def test_the_outbox_is_bounded_by_max_pending() -> None:
    conn = Connection(CODEC["msgpack"], Peer().send, Limits(max_pending=7), session="abc")
    assert conn.outbox.max_ticks == 7
    assert conn.session == "abc" and conn.subscriptions == {} and not conn.closed
