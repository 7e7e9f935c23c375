"""Symbol names: upper-cased, 1 to 32 characters of A-Z 0-9 . - / : _ (PROTOCOL.md)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketstream.core.symbols import SymbolInfo, normalize


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("aapl", "AAPL"), ("EUR/USD", "EUR/USD"), ("brk.b", "BRK.B"), ("X" * 32, "X" * 32), ("a:b_c-d", "A:B_C-D")],
)
def test_valid_symbols_are_upper_cased(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize("raw", ["", "X" * 33, "A B", "ÄPL", "A*", None, 5, ["A"]])
def test_invalid_symbols(raw: object) -> None:
    assert normalize(raw) is None


@pytest.mark.parametrize("raw", ["A\n", "\nA", "A\x00", "A\tB"])
def test_no_character_outside_the_set_gets_through(raw: str) -> None:
    assert normalize(raw) is None, "the whole string must match, not a prefix"


def test_digits_and_punctuation_are_allowed_alone() -> None:
    assert normalize("0") == "0"
    assert normalize("./-:_") == "./-:_"


@given(st.text(max_size=40))
def test_a_normalized_symbol_is_valid_and_a_fixed_point(raw: str) -> None:
    symbol = normalize(raw)
    if symbol is not None:
        assert 1 <= len(symbol) <= 32
        assert all(c.isascii() and (c.isupper() or c.isdigit() or c in ".-/:_") for c in symbol)
        assert normalize(symbol) == symbol


def test_symbol_info_round_trips_through_a_map() -> None:
    info = SymbolInfo("Apple Inc.", "equity", 227.5)
    assert info.as_dict() == {"name": "Apple Inc.", "kind": "equity", "reference": 227.5}
    assert SymbolInfo.from_dict(info.as_dict()) == info
    assert SymbolInfo.from_dict({"name": "X", "kind": "fx", "reference": None}) == SymbolInfo("X", "fx", None)
    assert SymbolInfo.from_dict({"name": "X", "kind": "fx", "reference": 2}) == SymbolInfo("X", "fx", 2.0)


@pytest.mark.parametrize(
    "value",
    [None, [], "x", {"name": "X"}, {"name": 1, "kind": "fx"}, {"name": "X", "kind": "fx", "reference": "1"},
     {"name": "X", "kind": "fx", "reference": True}],
)  # fmt: skip
def test_a_map_that_is_not_a_symbol_info(value: object) -> None:
    assert SymbolInfo.from_dict(value) is None
