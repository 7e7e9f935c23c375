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


# -- since (recovery) ------------------------------------------------------------------------


def subscribe_since(since: Any, rid: int | str | None = 5) -> Request:
    return parse({"op": "subscribe", "id": rid, "symbols": ["AAPL", "EUR/USD"], "since": since})


def test_no_since_is_an_empty_map() -> None:
    assert subscribe_since(None).since == {}
    assert parse({"op": "subscribe", "symbols": ["A"]}).since == {}


def test_since_a_seq_means_the_current_epoch() -> None:
    assert subscribe_since({"AAPL": 41, "eur/usd": 0}).since == {"AAPL": (41, None), "EUR/USD": (0, None)}, (
        "symbols normalized like the others"
    )


def test_since_a_seq_and_an_epoch() -> None:
    since = {"AAPL": {"seq": 41, "epoch": "3f9a0c1d"}, "EUR/USD": {"seq": 7}}
    assert subscribe_since(since).since == {"AAPL": (41, "3f9a0c1d"), "EUR/USD": (7, None)}


def test_since_may_name_symbols_the_request_does_not_subscribe() -> None:
    assert subscribe_since({"IBM": 3}).since == {"IBM": (3, None)}, "the hub ignores them"


def test_since_is_empty_when_empty() -> None:
    assert subscribe_since({}).since == {}


def test_unsubscribe_ignores_since() -> None:
    assert parse({"op": "unsubscribe", "symbols": ["A"], "since": "junk"}).since == {}


@pytest.mark.parametrize(
    ("since", "words"),
    [
        ([1, 2], "'since' must be a map of symbol to seq, got list"),
        ("AAPL", "'since' must be a map of symbol to seq, got str"),
        (5, "'since' must be a map of symbol to seq, got int"),
        ({"bad sym": 1}, "'since' names 'bad sym', which is not a symbol"),
        ({"AAPL": "41"}, "'since' for AAPL: seq must be an int >= 0, got '41'"),
        ({"AAPL": -1}, "'since' for AAPL: seq must be an int >= 0, got -1"),
        ({"AAPL": True}, "'since' for AAPL: seq must be an int >= 0, got True"),
        ({"AAPL": 1.5}, "'since' for AAPL: seq must be an int >= 0, got 1.5"),
        ({"AAPL": None}, "'since' for AAPL: seq must be an int >= 0, got None"),
        ({"AAPL": {"epoch": "e"}}, "'since' for AAPL: seq must be an int >= 0, got None"),
        ({"AAPL": {"seq": "1", "epoch": "e"}}, "'since' for AAPL: seq must be an int >= 0, got '1'"),
        ({"AAPL": {"seq": 1, "epoch": 7}}, "'since' for AAPL: epoch must be a short string"),
        ({"AAPL": {"seq": 1, "epoch": "e" * 65}}, "'since' for AAPL: epoch must be a short string"),
    ],
)
def test_a_bad_since_is_a_bad_request_that_names_the_problem(since: Any, words: str) -> None:
    with pytest.raises(RequestError) as caught:
        subscribe_since(since, rid="r1")
    assert caught.value.code == "bad_request"
    assert caught.value.message == words
    assert caught.value.request_id == "r1"


def test_a_long_seq_is_cut_in_the_message() -> None:
    with pytest.raises(RequestError) as caught:
        subscribe_since({"AAPL": "9" * 500})
    assert len(caught.value.message) < 120


def test_an_epoch_of_64_characters_is_fine() -> None:
    assert subscribe_since({"AAPL": {"seq": 1, "epoch": "e" * 64}}).since == {"AAPL": (1, "e" * 64)}


def test_since_has_at_most_as_many_entries_as_a_request_has_symbols() -> None:
    big = {f"S{i}": 1 for i in range(MAX_SYMBOLS_PER_REQUEST + 1)}
    with pytest.raises(RequestError, match=f"'since' has {MAX_SYMBOLS_PER_REQUEST + 1} entries; at most"):
        subscribe_since(big)
