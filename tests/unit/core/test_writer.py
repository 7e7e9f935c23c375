"""Frames built once (core/writer.py), the raw-writer path of `Connection.write_now`,
flush fairness and the frame size cap."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
import pytest

from marketstream.core.codec import CODEC
from marketstream.core.connection import Connection
from marketstream.core.fanout import FAIR_STEPS, Fanout
from marketstream.core.limits import Limits
from marketstream.core.outbox import CHECK_SIZE_FROM, Outbox
from marketstream.core.stats import Stats
from marketstream.core.writer import FrameWriter, frame, payload_size
from tests.unit.core.fakes import Clock, Peer, settle, tick


def unframe(data: bytes) -> tuple[int, bytes]:
    """(opcode byte, payload) of one unmasked server frame; checks its length field."""
    first, n = data[0], data[1]
    assert not n & 0x80, "server frames are not masked"
    offset = 2
    if n == 126:
        n, offset = int.from_bytes(data[2:4], "big"), 4
    elif n == 127:
        n, offset = int.from_bytes(data[2:10], "big"), 10
    assert len(data) == offset + n
    return first, data[offset:]


class RawPeer(Peer):
    """A peer whose server offers a raw writer: records the bytes written, and can refuse."""

    def __init__(self, writable: bool = True) -> None:
        super().__init__(writable)
        self.written: list[bytes] = []
        self.refuse = False

    def write(self, data: bytes) -> bool:
        if self.refuse:
            return False
        self.written.append(data)
        first, payload = unframe(data)
        assert first == 0x82
        self.frames.append(msgpack.unpackb(payload))
        return True


def raw_connection(peer: RawPeer, max_pending: int = 100) -> Connection:
    return Connection(
        CODEC["msgpack"],
        peer.send,
        Limits(max_pending=max_pending),
        "s",
        peer.closer,
        peer.writable,
        Clock(),
        write=peer.write,
    )


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
@pytest.mark.parametrize("binary", [True, False])
def test_a_frame_is_one_final_unmasked_frame_with_the_right_length(size: int, binary: bool) -> None:
    payload = b"p" * size
    first, body = unframe(frame(payload, binary))
    assert first == (0x82 if binary else 0x81)
    assert body == payload
    assert payload_size(frame(payload, binary)) == size


async def test_connections_given_the_same_single_tick_in_a_round_get_the_same_bytes() -> None:
    fanout = Fanout(Clock(), 0.0, 5.0)
    peers = [RawPeer() for _ in range(5)]
    conns = [raw_connection(p) for p in peers]
    for conn in conns:
        fanout.route(conn, "AAPL")
    await settle()  # nothing pending: no welcome in these connections
    t = tick("AAPL", 1)
    fanout.deliver(t)
    await fanout._flush()
    written = [p.written[-1] for p in peers]
    assert all(w is written[0] for w in written)  # one bytes object for all five
    assert [f["ticks"][0]["seq"] for p in peers for f in p.frames] == [1] * 5
    assert fanout.frames.built == 1 and fanout.frames.reused == 4


def test_a_shared_frame_lives_one_round() -> None:
    writer = FrameWriter()
    t = tick("AAPL", 1)
    a = writer.ticks(CODEC["msgpack"], [t])
    assert writer.ticks(CODEC["msgpack"], [t]) is a
    assert writer.ticks(CODEC["json"], [t]) != a  # one per codec
    writer.new_round()
    assert writer.ticks(CODEC["msgpack"], [t]) is not a


def test_json_frames_are_text_frames() -> None:
    t = tick("AAPL", 7)
    first, payload = unframe(FrameWriter().ticks(CODEC["json"], [t, tick("AAPL", 8)]))
    assert first == 0x81
    assert [x["seq"] for x in orjson.loads(payload)["ticks"]] == [7, 8]


async def test_write_now_sends_replies_before_ticks_and_leaves_the_rest_to_send_once_refused() -> None:
    peer = RawPeer()
    conn = raw_connection(peer)
    conn.reply({"type": "ack", "id": 1})
    conn.outbox.put(tick("AAPL", 1))
    write = peer.write

    def once(data: bytes) -> bool:  # the transport takes one frame, then pauses writing
        peer.refuse = bool(peer.written)
        return write(data)

    conn.write = once
    peer.is_writable = False  # the socket's buffer is not empty: a raw writer does not ask
    assert conn.ready()
    conn.write_now(FrameWriter())
    assert peer.types() == ["ack"]
    await settle()  # the writer task sends the rest through `send`
    assert peer.types() == ["ack", "ticks"]
    assert conn.frames == 2 and conn.ticks_sent == 1


async def test_a_refused_raw_write_leaves_first_in_line_through_send() -> None:
    peer = RawPeer()
    conn = raw_connection(peer)
    await settle()
    conn.outbox.put(tick("AAPL", 1))
    conn.outbox.put(tick("AAPL", 2))
    peer.refuse = True
    conn.write_now(FrameWriter())
    assert peer.written == []
    conn.outbox.put(tick("AAPL", 3))
    await settle()
    assert [[t["seq"] for t in f["ticks"]] for f in peer.frames] == [[1, 2], [3]]


async def test_each_flush_round_starts_further_on() -> None:
    fanout = Fanout(Clock(), 0.0, 5.0)
    peers = [RawPeer() for _ in range(FAIR_STEPS * 2)]
    conns = [raw_connection(p) for p in peers]
    order: list[int] = []
    for i, peer in enumerate(peers):
        write = peer.write

        def noting(data: bytes, i: int = i, write: Any = write) -> bool:
            order.append(i)
            return write(data)

        conns[i].write = noting
    lasts = []
    for seq in range(1, FAIR_STEPS + 1):
        order.clear()
        fanout.put(conns, tick("AAPL", seq))  # always marked in the same order
        await fanout._flush()
        assert sorted(order) == list(range(len(conns)))
        lasts.append(order[-1])
    assert len(set(lasts)) == FAIR_STEPS  # never last twice in FAIR_STEPS rounds


def test_a_tick_frame_stops_at_max_bytes_and_the_rest_waits_in_order() -> None:
    outbox = Outbox(10_000)
    ticks = [tick(f"S{i % 50}", i // 50 + 1) for i in range(CHECK_SIZE_FROM * 4)]
    for t in ticks:
        outbox.put(t)
    size = len(ticks[0].msgpack)
    first = outbox.take_ticks(size * 300)
    assert 0 < len(first) <= 300
    rest = outbox.take_ticks(size * 300)
    rest += outbox.take_ticks()
    assert first + rest == ticks
    assert not outbox


async def test_a_raw_round_samples_latency_and_counts_payload_bytes() -> None:
    stats = Stats()
    stats.sample_every = stats.sample_countdown = 2
    fanout = Fanout(Clock(), 0.0, 5.0, stats)
    peers = [RawPeer() for _ in range(10)]
    conns = [raw_connection(p) for p in peers]
    for conn in conns:
        fanout.route(conn, "AAPL")
    await settle()
    fanout.deliver(tick("AAPL", 1))
    await fanout._flush()
    assert all(len(p.written) == 1 for p in peers)
    assert len(stats.latency_ns) == 5, "ten frames written raw, one in two sampled"
    for conn, peer in zip(conns, peers, strict=True):
        assert conn.bytes_sent == len(unframe(peer.written[0])[1]), "the payload, not the header"
