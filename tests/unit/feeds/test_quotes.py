"""Quotes from outside are checked field by field, with a reason that names the field."""

from __future__ import annotations

from typing import Any

import pytest

from feeds.quotes import BadQuote, parse_quote

GOOD: dict[str, Any] = {"symbol": "aapl", "price": 227.5, "size": 100, "bid": 227.49, "ask": 227.51}


def test_a_good_quote_with_and_without_its_source_time() -> None:
    assert parse_quote(GOOD) == ("AAPL", 227.5, 100.0, 227.49, 227.51)
    assert parse_quote({**GOOD, "src_ts": 1_764_150_000_000_000_000})[5:] == (1_764_150_000_000_000_000,)
    text = {k: str(v) for k, v in {**GOOD, "src_ts": 5}.items()}
    assert parse_quote(text, text=True) == ("AAPL", 227.5, 100.0, 227.49, 227.51, 5), "CSV: values as text"


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"symbol": "no spaces"}, "bad_symbol", "symbol"),
        ({"symbol": None}, "missing_field", "symbol"),
        ({"price": "1.5"}, "bad_field", "price"),
        ({"price": 0}, "bad_field", "price"),
        ({"price": float("nan")}, "bad_field", "price"),
        ({"size": -1}, "bad_field", "size"),
        ({"size": True}, "bad_field", "size"),
        ({"bid": 300.0}, "bad_field", "bid"),
        ({"src_ts": 1.5}, "bad_field", "src_ts"),
        ({"src_ts": -1}, "bad_field", "src_ts"),
        ({"seq": 4}, "unknown_field", "seq"),
        ({"ts": 4}, "unknown_field", "ts"),
        ({"colour": "red"}, "unknown_field", "colour"),
    ],
)
def test_each_bad_field_is_named(change: dict[str, Any], code: str, field: str) -> None:
    with pytest.raises(BadQuote) as caught:
        parse_quote({**GOOD, **change})
    assert (caught.value.code, caught.value.field) == (code, field), caught.value.message


def test_not_a_map_and_a_missing_field() -> None:
    with pytest.raises(BadQuote, match="a tick is a map"):
        parse_quote([1, 2])
    bare = dict(GOOD)
    del bare["ask"]
    with pytest.raises(BadQuote, match="ask is required"):
        parse_quote(bare)


def test_replay_ignores_the_fields_it_does_not_use() -> None:
    assert parse_quote({**GOOD, "seq": 4, "ts": 9, "conflated": 2, "note": "x"}, strict=False)[0] == "AAPL"
