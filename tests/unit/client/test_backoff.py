"""Reconnect delays and the policy of each close code (PROTOCOL.md, "Close codes")."""

from __future__ import annotations

import random

import pytest

from marketstream.client.backoff import Backoff
from marketstream.client.errors import (
    KeyOverLimit,
    KeyRevoked,
    MessageTooBig,
    Policy,
    PolicyViolation,
    closed_error,
    policy,
    retried_status,
)


def test_delays_grow_exponentially_with_jitter_up_to_the_maximum() -> None:
    b = Backoff(initial=1.0, factor=2.0, maximum=8.0, random=random.Random(1))
    delays = [b.next() for _ in range(6)]
    for delay, cap in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert cap / 2 <= delay <= cap
    assert len(set(delays)) == 6, "jittered"
    b.reset()
    assert b.next() <= 1.0


def test_a_restart_is_retried_at_once_then_with_backoff() -> None:
    b = Backoff(initial=1.0, at_once=0.1)
    assert b.next(at_once=True) <= 0.1
    assert 1.0 <= b.next(at_once=True) <= 2.0, "the hub is still away: back off"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="initial <= maximum"):
        Backoff(initial=5, maximum=1)


@pytest.mark.parametrize(
    ("code", "want"),
    [
        (1012, Policy.AT_ONCE),
        (1013, Policy.BACKOFF),
        (1011, Policy.BACKOFF),
        (1006, Policy.BACKOFF),
        (1000, Policy.BACKOFF),
        (1008, Policy.RAISE),
        (1009, Policy.RAISE),
        (4001, Policy.RAISE),
        (4003, Policy.RAISE),
    ],
)
def test_each_close_code_has_its_policy(code: int, want: Policy) -> None:
    assert policy(code) is want


def test_fatal_closes_raise_their_own_exception() -> None:
    kinds = {1008: PolicyViolation, 1009: MessageTooBig, 4001: KeyOverLimit, 4003: KeyRevoked}
    for code, kind in kinds.items():
        error = closed_error(code, "why")
        assert type(error) is kind and error.code == code and "why" in str(error)


def test_refused_handshakes_are_retried_only_when_the_hub_is_away() -> None:
    assert [s for s in (400, 401, 403, 404, 429, 500, 502, 503) if retried_status(s)] == [429, 500, 502, 503]
