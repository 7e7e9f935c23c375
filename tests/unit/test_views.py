"""What a 503 of the HTTP API says failed (marketstream/views.py)."""

from __future__ import annotations

from redis import exceptions as redis_errors

from marketstream.views import _failure


def test_a_timeout_says_so_though_its_text_is_empty() -> None:
    assert str(TimeoutError()) == "", "the case this covers: a timeout has no text"
    assert _failure(TimeoutError()) == "no answer from the store within the timeout"


def test_other_failures_name_their_type_and_text() -> None:
    assert _failure(redis_errors.ConnectionError("Connection refused")) == "ConnectionError: Connection refused"
    assert _failure(RuntimeError()) == "RuntimeError"
