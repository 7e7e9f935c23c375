"""Request validation, throttle clamping, rate limiting, symbol names."""

from __future__ import annotations

from typing import Any

import pytest

from consumers.requests import RateLimiter, RequestError, effective_throttle, parse
from marketstream.symbols import group_name, normalize


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ([1], "bad_request"),
        ("ping", "bad_request"),
        ({}, "bad_request"),
        ({"op": 1}, "bad_request"),
        ({"op": "dance"}, "unknown_op"),
        ({"op": "subscribe"}, "bad_request"),
        ({"op": "subscribe", "symbols": "AAPL"}, "bad_request"),
        ({"op": "subscribe", "symbols": ["AAPL"], "throttle_ms": "100"}, "bad_request"),
        ({"op": "subscribe", "symbols": ["AAPL"], "throttle_ms": True}, "bad_request"),
        ({"op": "subscribe", "symbols": ["AAPL"], "throttle_ms": 1.5}, "bad_request"),
        ({"op": "subscribe", "symbols": ["AAPL"], "snapshot": "yes"}, "bad_request"),
        ({"op": "unsubscribe", "symbols": None}, "bad_request"),
        ({"op": "ping", "id": [1]}, "bad_request"),
        ({"op": "ping", "id": True}, "bad_request"),
        ({"op": "subscribe", "symbols": ["A"] * 11}, "bad_request"),
    ],
)
def test_bad_requests_name_the_problem(value: Any, code: str) -> None:
    with pytest.raises(RequestError) as err:
        parse(value, max_symbols=10)
    assert err.value.code == code
    assert err.value.message


def test_error_keeps_the_request_id() -> None:
    with pytest.raises(RequestError) as err:
        parse({"op": "dance", "id": 7}, 10)
    assert err.value.request_id == 7


def test_good_requests() -> None:
    r = parse({"op": "subscribe", "id": "x", "symbols": ["aapl"], "throttle_ms": 250, "snapshot": False}, 10)
    assert (r.op, r.id, r.symbols, r.throttle_ms, r.snapshot) == ("subscribe", "x", ["aapl"], 250, False)
    assert parse({"op": "ping"}, 10).id is None
    assert parse({"op": "unsubscribe", "symbols": []}, 10).symbols == []


@pytest.mark.parametrize(
    ("requested", "expected"), [(None, 50), (0, 50), (-5, 50), (100, 100), (101, 110), (253, 260), (10**9, 1000)]
)
def test_throttle_is_clamped_and_rounded_up_to_10_ms(requested: int | None, expected: int) -> None:
    assert effective_throttle(requested, 50, 1000) == expected


def test_throttle_zero_stays_zero() -> None:
    assert effective_throttle(0, 0, 1000) == 0
    assert effective_throttle(None, 0, 1000) == 0


def test_rate_limiter_refuses_past_the_rate_then_recovers() -> None:
    limiter = RateLimiter(5)
    assert all(limiter.allow(10.0) for _ in range(5))
    assert not limiter.allow(10.0)
    assert not limiter.exhausted
    assert limiter.allow(11.0)


def test_rate_limiter_is_exhausted_by_a_flood() -> None:
    limiter = RateLimiter(5)
    for _ in range(12):
        limiter.allow(10.0)
    assert limiter.exhausted


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("aapl", "AAPL"), ("EUR/USD", "EUR/USD"), ("brk.b", "BRK.B"), ("X" * 32, "X" * 32), ("a:b_c-d", "A:B_C-D")],
)
def test_valid_symbols_are_upper_cased(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize("raw", ["", "X" * 33, "A B", "ÄPL", "A*", None, 5, ["A"]])
def test_invalid_symbols(raw: object) -> None:
    assert normalize(raw) is None


def test_group_names_are_distinct_and_valid() -> None:
    names = {group_name("tick", s) for s in ["A/B", "A_SB", "A:B", "A_CB", "A_B", "A__B"]}
    assert len(names) == 6
    assert all(n.replace(".", "").replace("_", "").replace("-", "").isalnum() for n in names)


def test_request_symbols_are_normalized_once_in_order() -> None:
    from consumers.consumer import normalized

    symbols, rejected = normalized(["msft", "AAPL", "MSFT", "bad sym", 7, "aapl", "EUR/USD"])
    assert symbols == ["MSFT", "AAPL", "EUR/USD"]
    assert rejected == {"bad sym": "bad_symbol", "7": "bad_symbol"}
