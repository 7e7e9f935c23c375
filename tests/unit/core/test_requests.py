"""Request validation and rate limiting (symbol names: test_symbols.py; throttle: test_limits.py)."""

from __future__ import annotations

from typing import Any

import pytest

from marketstream.core.requests import (
    MAX_ID_LENGTH,
    MAX_SYMBOLS_PER_REQUEST,
    OPS,
    RateLimiter,
    Request,
    RequestError,
    normalized,
    parse,
    request_id,
)


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
        ({"op": "unsubscribe", "symbols": ["A"] * 11}, "bad_request"),
        ({"op": "ping", "id": "x" * (MAX_ID_LENGTH + 1)}, "bad_request"),
        ({"op": "ping", "id": 1.5}, "bad_request"),
        ({"op": "subscribe", "symbols": ["AAPL"], "snapshot": 1}, "bad_request"),
    ],
)
def test_bad_requests_name_the_problem(value: Any, code: str) -> None:
    with pytest.raises(RequestError) as err:
        parse(value, max_symbols=10)
    assert err.value.code == code
    assert err.value.message
    assert str(err.value) == err.value.message


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ([1], "expected a map with 'op', got list"),
        (None, "got null"),
        ({"op": None}, "'op' must be a string, got null"),
        ({"op": "dance"}, "unknown op 'dance'; expected one of subscribe, unsubscribe, list, ping"),
        ({"op": "subscribe", "symbols": {}}, "'symbols' must be a list of strings, got dict"),
        ({"op": "subscribe", "symbols": ["A"], "throttle_ms": "1"}, "'throttle_ms' must be an int, got str"),
        ({"op": "subscribe", "symbols": ["A"], "snapshot": None}, "'snapshot' must be a bool, got null"),
        ({"op": "subscribe", "symbols": ["A"] * 11}, "'symbols' has 11 entries; at most 10"),
        ({"op": "ping", "id": 2.0}, "'id' must be an int or a string, got float"),
        ({"op": "ping", "id": "x" * 200}, f"'id' is longer than {MAX_ID_LENGTH} characters"),
    ],
)
def test_error_messages_name_what_was_expected_and_what_came(value: Any, words: str) -> None:
    with pytest.raises(RequestError) as err:
        parse(value, max_symbols=10)
    assert words in err.value.message


def test_an_unknown_op_is_cut_in_the_message() -> None:
    with pytest.raises(RequestError) as err:
        parse({"op": "x" * 1000})
    assert len(err.value.message) < 200


def test_error_keeps_the_request_id() -> None:
    with pytest.raises(RequestError) as err:
        parse({"op": "dance", "id": 7}, 10)
    assert err.value.request_id == 7


def test_error_of_a_bad_id_has_no_id() -> None:
    with pytest.raises(RequestError) as err:
        parse({"op": "ping", "id": [7]}, 10)
    assert err.value.request_id is None


def test_good_requests() -> None:
    r = parse({"op": "subscribe", "id": "x", "symbols": ["aapl"], "throttle_ms": 250, "snapshot": False}, 10)
    assert (r.op, r.id, r.symbols, r.throttle_ms, r.snapshot) == ("subscribe", "x", ["AAPL"], 250, False)
    assert r.rejected == {}
    assert parse({"op": "ping"}, 10).id is None
    assert parse({"op": "unsubscribe", "symbols": []}, 10).symbols == []


def test_defaults_of_a_subscribe() -> None:
    assert parse({"op": "subscribe", "symbols": ["A"]}) == Request("subscribe", None, ["A"], {}, None, True)


@pytest.mark.parametrize("op", ["list", "ping"])
def test_list_and_ping_ignore_other_fields(op: str) -> None:
    assert parse({"op": op, "id": 3, "symbols": "whatever"}) == Request(op, 3)  # type: ignore[arg-type]


def test_unsubscribe_normalizes_and_rejects_like_subscribe() -> None:
    r = parse({"op": "unsubscribe", "id": 1, "symbols": ["msft", "bad sym", "MSFT"], "throttle_ms": "ignored"})
    assert (r.op, r.symbols, r.rejected) == ("unsubscribe", ["MSFT"], {"bad sym": "bad_symbol"})


def test_the_symbol_bound_defaults_to_the_module_constant() -> None:
    parse({"op": "subscribe", "symbols": ["A"] * MAX_SYMBOLS_PER_REQUEST})
    with pytest.raises(RequestError):
        parse({"op": "subscribe", "symbols": ["A"] * (MAX_SYMBOLS_PER_REQUEST + 1)})


def test_ops() -> None:
    assert OPS == ("subscribe", "unsubscribe", "list", "ping")


@pytest.mark.parametrize(
    ("value", "expected"),
    [({"id": 5}, 5), ({"id": "a"}, "a"), ({"id": True}, None), ({"id": [1]}, None), ([1], None), (None, None)],
)
def test_request_id_of_a_request_refused_early(value: Any, expected: int | str | None) -> None:
    assert request_id(value) == expected


def test_request_id_refuses_a_long_string() -> None:
    assert request_id({"id": "x" * MAX_ID_LENGTH}) == "x" * MAX_ID_LENGTH
    assert request_id({"id": "x" * (MAX_ID_LENGTH + 1)}) is None


def test_request_symbols_are_normalized_once_in_order() -> None:
    symbols, rejected = normalized(["msft", "AAPL", "MSFT", "bad sym", 7, "aapl", "EUR/USD"])
    assert symbols == ["MSFT", "AAPL", "EUR/USD"]
    assert rejected == {"bad sym": "bad_symbol", "7": "bad_symbol"}


def test_a_rejected_symbol_is_cut_to_64_characters() -> None:
    _, rejected = normalized(["x" * 100])
    assert rejected == {"x" * 64: "bad_symbol"}


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


def test_rate_limiter_refills_at_the_rate() -> None:
    limiter = RateLimiter(4)
    assert all(limiter.allow(10.0) for _ in range(4))
    assert not limiter.allow(10.0)
    assert limiter.allow(10.25), "a quarter of a second refills one token"
    assert not limiter.allow(10.25)


def test_rate_limiter_strikes_are_counted_per_second() -> None:
    limiter = RateLimiter(2)
    assert limiter.allow(10.0) and limiter.allow(10.0)
    assert not limiter.allow(10.0) and not limiter.allow(10.0)
    assert limiter.strikes == 2 and not limiter.exhausted
    assert not limiter.allow(10.2)
    assert limiter.strikes == 3 and limiter.exhausted, "more strikes than the rate within a second"
    assert limiter.allow(11.6) and limiter.allow(11.6)
    assert not limiter.allow(11.6)
    assert limiter.strikes == 1 and not limiter.exhausted, "the strikes of an earlier second are forgotten"
