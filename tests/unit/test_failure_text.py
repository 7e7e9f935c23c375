"""What a 503 of the HTTP API says failed (marketstream/views.py, with shard_health.failure_text)."""

from __future__ import annotations

from redis import exceptions as redis_errors

from marketstream.adapters.shard_health import failure_text


def test_a_timeout_says_so_though_its_text_is_empty() -> None:
    assert str(TimeoutError()) == "", "the case this covers: a timeout has no text"
    assert failure_text(TimeoutError()) == "no answer within the timeout"


def test_other_failures_name_their_type_and_text() -> None:
    assert failure_text(redis_errors.ConnectionError("Connection refused")) == "ConnectionError: Connection refused"
    assert failure_text(RuntimeError()) == "RuntimeError"
