"""Unit tests of what load-test clients check: seq, throttle, latency buckets, frame parsing."""

from __future__ import annotations

import os

import pytest

from loadtest.asyncws import OP_BINARY, OP_PING, OP_TEXT, FrameParser, check_response, handshake_request
from loadtest.streamcheck import StreamCheck, Totals, latency_bucket, percentiles
from tests.support.client import Delivery, assert_seq_increasing


def tick(symbol: str, seq: int, ts: int = 0) -> dict[str, object]:
    return {"symbol": symbol, "seq": seq, "ts": ts}


def test_seq_gaps_and_violations() -> None:
    totals = Totals()
    check = StreamCheck(totals)
    check.ticks([tick("A", 5)], 0, 0, snapshot=True)
    check.ticks([tick("A", 6), tick("A", 9), tick("B", 1)], 1000, 0)
    assert (totals.ticks, totals.snapshot_ticks, totals.gaps, totals.seq_violations) == (3, 1, 2, 0)
    check.ticks([tick("A", 9), tick("A", 3)], 1000, 0)
    assert totals.seq_violations == 2
    assert check.last_seq == {"A": 9, "B": 1}, "violating ticks do not move the last seq"
    assert check.stale({"A": 9, "B": 2}, ["A", "B"]) == 1


def test_throttle_violations_have_a_tolerance() -> None:
    totals = Totals()
    check = StreamCheck(totals, throttle_ms=250, tolerance_ms=20)
    ms = 1_000_000
    check.ticks([tick("A", 1)], 0, 0)
    check.ticks([tick("A", 2)], 0, 235 * ms)  # within the tolerance
    check.ticks([tick("A", 3)], 0, 435 * ms)  # 200 ms: a violation
    assert totals.throttle_violations == 1
    check.ticks([tick("B", 1), tick("B", 2)], 0, 500 * ms)  # two in one frame
    assert totals.throttle_violations == 2


def test_latency_histogram() -> None:
    assert [latency_bucket(us) for us in (-5, 0, 9, 10, 999, 1000, 12_345, 2_500_000)] == [
        10, 10, 10, 20, 1000, 1100, 13_000, 2_600_000,
    ]  # fmt: skip
    for us in range(0, 3_000_000, 997):
        bound = latency_bucket(us)
        assert us < bound <= max(us * 1.1, us + 10)
    hist = {latency_bucket(us): 1 for us in range(100, 10_100, 100)}
    result = percentiles(hist, (50, 99))
    assert 5000 <= result[50] <= 5200 and 9900 <= result[99] <= 10_100
    assert percentiles({}, (50,)) == {50: 0.0}


def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    n = len(payload)
    head = bytes(((0x80 if fin else 0) | opcode,))
    if n < 126:
        head += bytes((n,))
    elif n < 65536:
        head += bytes((126,)) + n.to_bytes(2, "big")
    else:
        head += bytes((127,)) + n.to_bytes(8, "big")
    return head + payload


def test_frame_parser_split_anywhere() -> None:
    big = os.urandom(70_000)
    stream = (
        server_frame(OP_BINARY, b"abc")
        + server_frame(OP_TEXT, b"x" * 300)
        + server_frame(OP_BINARY, big)
        + server_frame(OP_TEXT, b"he", fin=False)
        + server_frame(OP_PING, b"p")
        + server_frame(0, b"llo")
    )
    expected = [(OP_BINARY, b"abc"), (OP_TEXT, b"x" * 300), (OP_BINARY, big), (OP_PING, b"p"), (OP_TEXT, b"hello")]
    for step in (1, 7, 4096, len(stream)):
        parser = FrameParser()
        got = []
        for i in range(0, len(stream), step):
            got.extend(parser.feed(stream[i : i + step]))
        assert got == expected, step


def test_handshake_accept() -> None:
    request, accept = handshake_request("127.0.0.1", 80, "/ws/v1/stream", ["marketstream.v1.json"])
    assert request.startswith(b"GET /ws/v1/stream HTTP/1.1\r\n") and request.endswith(b"\r\n\r\n")
    head = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: " + accept
    head += b"\r\nSec-WebSocket-Protocol: marketstream.v1.json"
    assert check_response(head, accept) == "marketstream.v1.json"


def test_the_test_clients_seq_check_is_this_one() -> None:
    """tests.support.client.assert_seq_increasing uses StreamCheck: per symbol, across snapshot and ticks."""

    def delivered(symbol: str, seq: int, index: int = 1, kind: str = "ticks") -> Delivery:
        return Delivery(index, 0.0, kind, {"symbol": symbol, "seq": seq, "ts": 0})

    stream = [delivered("A", 5, 0, "snapshot"), delivered("B", 1), delivered("A", 6), delivered("A", 9)]
    assert assert_seq_increasing(stream, lost=2).lost == 2, "6 -> 9 without conflated: two ticks lost"
    with pytest.raises(AssertionError, match="2 ticks lost"):
        assert_seq_increasing(stream)
    merged = Delivery(1, 0.0, "ticks", {"symbol": "A", "seq": 9, "ts": 0, "conflated": 2})
    totals = assert_seq_increasing([*stream[:3], merged])
    assert (totals.lost, totals.conflated, totals.gaps) == (0, 2, 2), "a gap accounted for by conflated"
    over = Delivery(1, 0.0, "ticks", {"symbol": "A", "seq": 9, "ts": 0, "conflated": 3})
    with pytest.raises(AssertionError, match="with conflated 3"):
        assert_seq_increasing([*stream[:3], over])
    reset = Delivery(2, 0.0, "reset", {"type": "reset", "symbol": "A", "epoch": "e2"})
    assert assert_seq_increasing([*stream[:3], reset, delivered("A", 1, 3)]).lost == 0, "seq restarts after a reset"
    for repeated in (5, 4):
        with pytest.raises(AssertionError, match=f"A: seq {repeated} after 5 \\(ticks, frame 2\\)"):
            assert_seq_increasing([delivered("A", 5, 0, "snapshot"), delivered("B", 7), delivered("A", repeated, 2)])
