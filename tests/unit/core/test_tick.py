"""The tick: a draft encoded once into both codecs and completed with its seq; the bytes
decode back to the same tick; `conflated` is added once per count."""

from __future__ import annotations

import gc
import time
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketstream.core.tick import Draft, EncodedTick, Tick, now_ns

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


def test_repr_names_symbol_seq_and_epoch() -> None:
    assert repr(EncodedTick.encode(TICK)) == "EncodedTick('EUR/USD', seq=42, epoch='')"
    assert repr(EncodedTick.encode(TICK, "e1")) == "EncodedTick('EUR/USD', seq=42, epoch='e1')"


def test_repr_names_conflated_when_there_is_some() -> None:
    tick = EncodedTick.encode(TICK, "e1")
    assert repr(tick.with_conflated(3)) == "EncodedTick('EUR/USD', seq=42, epoch='e1', conflated=3)"


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


# -- the draft, completed by the seq authority --------------------------------------------

FIELDS: dict[str, Any] = {k: v for k, v in TICK.items() if k != "seq"}


def with_seq_last(fields: dict[str, Any], seq: int) -> dict[str, Any]:
    return {**fields, "seq": seq}


def test_a_completed_draft_is_the_tick_with_seq_last_in_both_codecs() -> None:
    tick = Draft.encode(FIELDS).complete(42, "e1")
    assert tick.msgpack == msgpack.packb(with_seq_last(FIELDS, 42))
    assert tick.json == orjson.dumps(with_seq_last(FIELDS, 42))
    assert (tick.symbol, tick.seq, tick.epoch, tick.conflated) == ("EUR/USD", 42, "e1", 0)
    assert tick.base is tick
    assert tick.decode() == TICK


def test_one_draft_completes_into_many_ticks() -> None:
    draft = Draft.encode(FIELDS)
    assert draft.symbol == "EUR/USD"
    first, second = draft.complete(1), draft.complete(2**40)
    assert (first.seq, first.epoch) == (1, "")
    assert msgpack.unpackb(second.msgpack)["seq"] == orjson.loads(second.json)["seq"] == 2**40


def test_a_draft_of_many_fields_has_a_map16_header() -> None:
    fields = {"symbol": "A", **{f"f{i}": i for i in range(20)}}
    tick = Draft.encode(fields).complete(7)
    assert tick.msgpack[0] == 0xDE
    assert tick.msgpack == msgpack.packb(with_seq_last(fields, 7))
    assert tick.json == orjson.dumps(with_seq_last(fields, 7))


def test_a_draft_of_fifteen_entries_with_seq_has_a_fixmap_header() -> None:
    fields = {"symbol": "A", **{f"f{i}": i for i in range(13)}}  # 14 fields and seq: 15 entries
    tick = Draft.encode(fields).complete(7)
    assert tick.msgpack[0] == 0x8F
    assert tick.msgpack == msgpack.packb(with_seq_last(fields, 7))


@pytest.mark.parametrize("field", ["seq", "conflated"])
def test_a_draft_refuses_seq_and_conflated(field: str) -> None:
    with pytest.raises(ValueError, match="no seq and no conflated"):
        Draft.encode({**FIELDS, field: 1})


@given(
    st.text(min_size=1, max_size=32),
    st.integers(0, 2**63 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_completed_drafts_match_msgpack_and_orjson(symbol: str, seq: int, ts: int, price: float) -> None:
    fields = {"symbol": symbol, "ts": ts, "price": price, "size": 1.0, "bid": price, "ask": price}
    tick = Draft.encode(fields).complete(seq)
    assert tick.msgpack == msgpack.packb(with_seq_last(fields, seq))
    assert tick.json == orjson.dumps(with_seq_last(fields, seq))


# -- conflated, added once per count --------------------------------------------------------


def test_with_conflated_adds_the_field_in_both_codecs() -> None:
    tick = Draft.encode(FIELDS).complete(42, "e1")
    variant = tick.with_conflated(3)
    expected = {**with_seq_last(FIELDS, 42), "conflated": 3}
    assert msgpack.unpackb(variant.msgpack) == expected
    assert orjson.loads(variant.json) == expected
    assert variant.msgpack == msgpack.packb(expected) and variant.json == orjson.dumps(expected)
    assert (variant.symbol, variant.seq, variant.epoch, variant.conflated) == ("EUR/USD", 42, "e1", 3)
    assert (variant.base.msgpack, variant.base.json, variant.base.conflated) == (tick.msgpack, tick.json, 0)
    assert (tick.conflated, tick.decode()) == (0, TICK), "the tick itself is unchanged"


def test_with_conflated_caches_one_variant_per_count_in_a_row() -> None:
    tick = EncodedTick.encode(TICK)
    three = tick.with_conflated(3)
    assert tick.with_conflated(3) is three, "the subscribers of one bucket share one encoding"
    five = tick.with_conflated(5)
    assert five is not three and five.conflated == 5
    assert tick.with_conflated(5) is five
    again = tick.with_conflated(3)
    assert again is not three and again.msgpack == three.msgpack, "only the last variant is kept"


def test_a_variant_is_made_from_the_base_tick() -> None:
    tick = EncodedTick.encode(TICK)
    variant = tick.with_conflated(2).with_conflated(7)
    assert variant.base.msgpack == tick.msgpack and variant.decode() == {**TICK, "conflated": 7}, "not two fields"
    assert tick.with_conflated(2).with_conflated(2).msgpack == tick.with_conflated(2).msgpack
    assert tick.with_conflated(4).with_conflated(0).json == tick.json
    assert tick.with_conflated(-1) is tick and tick.with_conflated(0) is tick


@pytest.mark.parametrize("fields", [14, 15, 16, 40])
def test_with_conflated_grows_every_map_header(fields: int) -> None:
    """fixmap, fixmap to map16 (15 entries), and map16."""
    body = {"symbol": "A", **{f"f{i}": i for i in range(fields - 2)}}
    tick = Draft.encode(body).complete(9)
    assert len(tick.decode()) == fields
    expected = {**with_seq_last(body, 9), "conflated": 11}
    assert msgpack.unpackb(tick.with_conflated(11).msgpack) == expected
    assert tick.with_conflated(11).msgpack == msgpack.packb(expected)
    assert orjson.loads(tick.with_conflated(11).json) == expected


def test_with_conflated_refuses_what_is_not_a_small_map() -> None:
    with pytest.raises(ValueError, match="not a msgpack map"):
        EncodedTick("A", 1, msgpack.packb([1, 2]), b"[1,2]").with_conflated(1)


def test_ticks_and_their_variants_hold_no_reference_cycle() -> None:
    """Ticks are freed by reference counting, never left to the cyclic collector: a
    cycle per tick costs the tick path CPU (collections) and memory (ticks wait for one)."""
    gc.collect()
    tick = EncodedTick.encode(TICK)
    variant = tick.with_conflated(3)
    assert variant.base.msgpack == tick.msgpack
    del tick, variant
    assert gc.collect() == 0, "nothing was left for the cyclic collector"
