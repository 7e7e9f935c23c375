"""Limits: checked when made, announced in `welcome`, and the effective throttle."""

from __future__ import annotations

import dataclasses

import pytest

from marketstream.core.limits import THROTTLE_STEP_MS, Limits


def test_defaults() -> None:
    limits = Limits()
    assert limits.announced() == {
        "max_subscriptions": 1000,
        "max_message_bytes": 65536,
        "max_requests_per_s": 50,
        "min_throttle_ms": 0,
        "max_throttle_ms": 60000,
        "max_recovery": 2000,
    }
    assert limits.max_pending == 1000


def test_max_pending_is_not_announced() -> None:
    assert "max_pending" not in Limits(max_pending=7).announced()


@pytest.mark.parametrize("name", ["max_subscriptions", "max_message_bytes", "max_requests_per_s", "max_pending"])
@pytest.mark.parametrize("value", [0, -1])
def test_counts_must_be_positive(name: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"{name} must be >= 1, got {value}"):
        Limits(**{name: value})


def test_max_recovery_is_announced() -> None:
    assert Limits(max_recovery=7).announced()["max_recovery"] == 7


def test_max_recovery_may_be_zero() -> None:
    assert Limits(max_recovery=0).max_recovery == 0, "only a client that missed nothing recovers"


@pytest.mark.parametrize("value", [-1, -100])
def test_max_recovery_must_not_be_negative(value: int) -> None:
    with pytest.raises(ValueError, match=f"max_recovery must be >= 0, got {value}"):
        Limits(max_recovery=value)


@pytest.mark.parametrize(("low", "high"), [(-1, 100), (200, 100)])
def test_throttle_limits_must_be_ordered(low: int, high: int) -> None:
    with pytest.raises(ValueError, match=f"got {low}..{high}"):
        Limits(min_throttle_ms=low, max_throttle_ms=high)


def test_limits_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Limits().max_pending = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("requested", "expected"), [(None, 50), (0, 50), (-5, 50), (100, 100), (101, 110), (253, 260), (10**9, 1000)]
)
def test_throttle_is_clamped_and_rounded_up_to_10_ms(requested: int | None, expected: int) -> None:
    assert THROTTLE_STEP_MS == 10
    assert Limits(min_throttle_ms=50, max_throttle_ms=1000).throttle(requested) == expected


def test_throttle_zero_stays_zero() -> None:
    limits = Limits(min_throttle_ms=0, max_throttle_ms=1000)
    assert limits.throttle(0) == 0
    assert limits.throttle(None) == 0


@pytest.mark.parametrize("requested", [1, 9, 10])
def test_the_smallest_throttle_is_one_step(requested: int) -> None:
    assert Limits().throttle(requested) == THROTTLE_STEP_MS


def test_the_maximum_wins_over_rounding() -> None:
    assert Limits(max_throttle_ms=1005).throttle(1001) == 1005
