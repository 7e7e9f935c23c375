"""Entitlements: exact symbols, prefix wildcards and `*`, compiled once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketstream.core.entitlements import Entitlement

SYMBOL = st.from_regex(r"[A-Z0-9.\-/:_]{1,32}", fullmatch=True)


def test_exact_symbols_and_prefixes() -> None:
    grant = Entitlement.parse("AAPL, msft ,FX:*,BTC/*")
    assert grant.allows("AAPL") and grant.allows("MSFT")
    assert grant.allows("FX:EURUSD") and grant.allows("FX:") is True and grant.allows("BTC/USD")
    assert not grant.allows("AAPLX") and not grant.allows("IBM") and not grant.allows("ETH/USD")
    assert not grant.allows("FXEURUSD"), "the prefix is literal, up to the star"
    assert grant.patterns == ("AAPL", "MSFT", "FX:*", "BTC/*")


def test_star_allows_everything_and_nothing_allows_nothing() -> None:
    assert Entitlement.everything().allows("ANY.THING")
    assert Entitlement.parse("IBM,*").allows("AAPL")
    nothing = Entitlement([])
    assert not nothing.allows("AAPL") and nothing.patterns == ()
    assert not Entitlement.parse(" , ").allows("AAPL"), "blank entries are ignored"


@pytest.mark.parametrize("bad", ["bad sym", "A*B*", "**", "FX:*X", "é", "X" * 33])
def test_a_pattern_that_is_not_a_symbol_prefix_or_star_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="expected SYMBOL, PREFIX\\* or \\*"):
        Entitlement([bad])


def test_a_prefix_covered_by_a_shorter_one_is_dropped() -> None:
    grant = Entitlement(["FX:*", "FX:EUR*", "F*"])
    assert grant._prefixes == ("F",)
    assert grant.allows("FOO") and grant.allows("FX:EURUSD")


@given(st.lists(SYMBOL, max_size=5), st.lists(SYMBOL, max_size=3), SYMBOL)
def test_allows_is_exact_membership_or_a_prefix_match(exact: list[str], prefixes: list[str], symbol: str) -> None:
    grant = Entitlement(exact + [p + "*" for p in prefixes])
    assert grant.allows(symbol) == (symbol in exact or any(symbol.startswith(p) for p in prefixes))
