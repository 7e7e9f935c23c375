"""Connection.drain: replies before ticks, ticks in order, a failed send closes quietly."""

from __future__ import annotations

import msgpack

from marketstream.codec import CODEC
from marketstream.connection import MAX_CONTROLS, Connection
from marketstream.tick import EncodedTick


def tick(symbol: str, seq: int) -> EncodedTick:
    return EncodedTick.encode(
        {"symbol": symbol, "seq": seq, "ts": 1, "price": 1.0, "size": 1.0, "bid": 1.0, "ask": 1.0}
    )


async def test_replies_leave_before_ticks_and_ticks_in_order() -> None:
    frames: list[dict] = []

    async def send(frame: bytes) -> None:
        frames.append(msgpack.unpackb(frame))

    conn = Connection(CODEC["msgpack"], send, max_pending=100)
    conn.outbox.put(tick("A", 1))
    conn.reply({"type": "pong", "id": 1})
    conn.outbox.put(tick("A", 2))
    await conn.drain()
    assert [m["type"] for m in frames] == ["pong", "ticks"]
    assert [t["seq"] for t in frames[1]["ticks"]] == [1, 2]
    assert conn.frames == 2 and conn.ticks_sent == 2
    await conn.stop()


async def test_a_held_connection_sends_nothing_until_released() -> None:
    frames: list[bytes] = []

    async def send(frame: bytes) -> None:
        frames.append(frame)

    conn = Connection(CODEC["msgpack"], send, max_pending=100)
    conn.held += 1
    conn.reply({"type": "ack"})
    await conn.drain()
    assert frames == []
    conn.held -= 1
    await conn.drain()
    assert len(frames) == 1


async def test_a_failed_send_closes_quietly() -> None:
    async def broken(frame: bytes) -> None:
        raise ConnectionResetError

    conn = Connection(CODEC["msgpack"], broken, max_pending=10)
    conn.reply({"type": "pong"})
    await conn.drain()
    assert conn.closed


async def test_a_client_that_lets_replies_pile_up_is_closed_once_with_1013() -> None:
    killed: list[int] = []
    conn = Connection(CODEC["msgpack"], broken_never_called, max_pending=10, kill=killed.append)
    conn.held += 1  # nothing leaves, as for a client whose socket is full
    for i in range(MAX_CONTROLS + 5):
        conn.reply({"type": "pong", "id": i})
    assert killed == [1013]
    assert conn.closed and len(conn.outbox.controls) == MAX_CONTROLS


async def broken_never_called(frame: bytes) -> None:
    raise AssertionError("nothing is sent while the connection is held")
