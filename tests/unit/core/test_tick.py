"""The tick: encoded once into both codecs; the bytes decode back to the same tick."""

from __future__ import annotations

import time

import msgpack
import orjson
from hypothesis import given
from hypothesis import strategies as st

from marketstream.core.tick import EncodedTick, Tick, now_ns

TICK: Tick = {
    "symbol": "EUR/USD",
    "seq": 42,
    "ts": 1_700_000_000_123_456_789,
    "price": 1.0845,
    "size": 100_000.0,
    "bid": 1.0844,
    "ask": 1.0846,
}


def test_encode_keeps_identity_and_both_codecs() -> None:
    encoded = EncodedTick.encode(TICK)
    assert (encoded.symbol, encoded.seq) == ("EUR/USD", 42)
    assert msgpack.unpackb(encoded.msgpack) == TICK
    assert orjson.loads(encoded.json) == TICK


def test_decode_returns_the_tick() -> None:
    assert EncodedTick.encode(TICK).decode() == TICK


def test_fields_beyond_the_tick_are_kept() -> None:
    extra = {**TICK, "src_ts": 5, "conflated": 3}
    encoded = EncodedTick.encode(extra)
    assert encoded.decode() == extra
    assert orjson.loads(encoded.json) == extra


def test_the_constructor_takes_the_bytes_as_given() -> None:
    encoded = EncodedTick("A", 7, b"m", b"j")
    assert (encoded.symbol, encoded.seq, encoded.msgpack, encoded.json) == ("A", 7, b"m", b"j")


def test_repr_names_symbol_and_seq() -> None:
    assert repr(EncodedTick.encode(TICK)) == "EncodedTick('EUR/USD', seq=42)"


def test_an_encoded_tick_has_no_dict() -> None:
    assert not hasattr(EncodedTick.encode(TICK), "__dict__"), "slots keep the many shared ticks small"


def test_now_ns_is_wall_clock_nanoseconds() -> None:
    before = time.time_ns()
    now = now_ns()
    after = time.time_ns()
    assert isinstance(now, int) and before <= now <= after


@given(
    st.text(min_size=1, max_size=32),
    st.integers(1, 2**63 - 1),
    st.integers(0, 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_msgpack_and_json_carry_the_same_tick(symbol: str, seq: int, ts: int, price: float) -> None:
    tick: Tick = {"symbol": symbol, "seq": seq, "ts": ts, "price": price, "size": 1.0, "bid": price, "ask": price}
    encoded = EncodedTick.encode(tick)
    assert msgpack.unpackb(encoded.msgpack) == orjson.loads(encoded.json) == tick
