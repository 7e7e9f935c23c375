"""Codec: frames built by joining pre-encoded ticks decode to the protocol's messages."""

from __future__ import annotations

import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketstream.core.codec import CODEC, CODECS, SUBPROTOCOLS, BadFrame, Codec, decode_request
from marketstream.core.tick import EncodedTick


def tick(symbol: str = "AAPL", seq: int = 1) -> EncodedTick:
    return EncodedTick.encode(
        {
            "symbol": symbol,
            "seq": seq,
            "ts": 1_700_000_000_000_000_000,
            "price": 1.5,
            "size": 100.0,
            "bid": 1.4,
            "ask": 1.6,
        }
    )


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 65535, 65536])
def test_msgpack_ticks_frame_decodes_for_every_array_header_size(n: int) -> None:
    ticks = [tick(seq=i + 1) for i in range(n)]
    frame = msgpack.unpackb(CODEC["msgpack"].ticks(ticks))
    assert frame["type"] == "ticks"
    assert [t["seq"] for t in frame["ticks"]] == list(range(1, n + 1))


@pytest.mark.parametrize("kind", ["ticks", "snapshot"])
def test_json_frame_is_valid_json_with_the_ticks(kind: str) -> None:
    ticks = [tick("AAPL", 1), tick("EUR/USD", 7)]
    frame = orjson.loads(CODEC["json"].ticks(ticks, kind))
    assert frame == {"type": kind, "ticks": [t.decode() for t in ticks]}


@pytest.mark.parametrize("kind", ["ticks", "snapshot"])
def test_msgpack_frame_of_each_kind(kind: str) -> None:
    ticks = [tick("AAPL", 1), tick("EUR/USD", 7)]
    assert msgpack.unpackb(CODEC["msgpack"].ticks(ticks, kind)) == {"type": kind, "ticks": [t.decode() for t in ticks]}


def test_empty_json_frame_is_valid_json() -> None:
    assert orjson.loads(CODEC["json"].ticks([])) == {"type": "ticks", "ticks": []}


def test_both_codecs_carry_the_same_tick() -> None:
    t = tick("BTC/USD", 42)
    assert msgpack.unpackb(CODEC["msgpack"].ticks([t]))["ticks"] == orjson.loads(CODEC["json"].ticks([t]))["ticks"]


def test_control_messages_in_each_codec() -> None:
    message = {"type": "pong", "id": "a", "server_time": 5}
    assert msgpack.unpackb(CODEC["msgpack"].message(message)) == message
    assert orjson.loads(CODEC["json"].message(message)) == message


def test_codec_table() -> None:
    assert CODECS == ("msgpack", "json")
    assert SUBPROTOCOLS == {"marketstream.v1.msgpack": "msgpack", "marketstream.v1.json": "json"}
    assert CODEC["msgpack"].binary and not CODEC["json"].binary
    assert all(isinstance(CODEC[name], Codec) and CODEC[name].name == name for name in CODECS)


def test_requests_decode_from_either_frame_kind() -> None:
    assert decode_request('{"op":"ping"}', None) == {"op": "ping"}
    assert decode_request(None, msgpack.packb({"op": "ping"})) == {"op": "ping"}


def test_msgpack_requests_may_have_non_string_keys() -> None:
    assert decode_request(None, msgpack.packb({1: "x"})) == {1: "x"}


@pytest.mark.parametrize(
    ("text", "data"),
    [("{", None), ("", None), (None, b"\xc1"), (None, b"\x92\x01"), (None, msgpack.packb(1) + b"x"), (None, None)],
)
def test_undecodable_frames_raise_bad_frame(text: str | None, data: bytes | None) -> None:
    with pytest.raises(BadFrame):
        decode_request(text, data)


def test_bad_frame_names_the_error() -> None:
    with pytest.raises(BadFrame, match="JSONDecodeError"):
        decode_request("{", None)
    with pytest.raises(BadFrame, match="empty frame"):
        decode_request(None, None)


@given(st.binary(max_size=256))
def test_arbitrary_binary_never_raises_anything_but_bad_frame(data: bytes) -> None:
    try:
        decode_request(None, data)
    except BadFrame:
        pass


@given(st.text(max_size=256))
def test_arbitrary_text_never_raises_anything_but_bad_frame(text: str) -> None:
    try:
        decode_request(text, None)
    except BadFrame:
        pass
