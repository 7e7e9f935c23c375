"""Client requests: validation into typed values, with errors that say what was wrong.

Pure functions; no I/O. Every check raises `RequestError(code, message)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OPS = ("subscribe", "unsubscribe", "list", "ping")
# Symbols one request may name. Over max_subscriptions is fine: those past the limit are
# rejected one by one with limit_exceeded; this bound only keeps one request's work small.
MAX_SYMBOLS_PER_REQUEST = 10_000


class RequestError(Exception):
    def __init__(self, code: str, message: str, request_id: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Request:
    op: str
    id: int | str | None
    symbols: list[Any]
    throttle_ms: int | None = None
    snapshot: bool = True


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def request_id(value: Any) -> int | str | None:
    """The request's `id` if it has a valid one (for replies to requests refused early)."""
    rid = value.get("id") if isinstance(value, dict) else None
    if isinstance(rid, bool) or not isinstance(rid, (int, str)) or (isinstance(rid, str) and len(rid) > 128):
        return None
    return rid


def parse(value: Any, max_symbols: int = MAX_SYMBOLS_PER_REQUEST) -> Request:
    """Validate a decoded frame as a request (PROTOCOL.md, client to server)."""
    if not isinstance(value, dict):
        raise RequestError("bad_request", f"expected a map with 'op', got {_type_name(value)}")
    request_id = value.get("id")
    if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, (int, str))):
        raise RequestError("bad_request", f"'id' must be an int or a string, got {_type_name(request_id)}")
    if isinstance(request_id, str) and len(request_id) > 128:
        raise RequestError("bad_request", "'id' is longer than 128 characters")
    op = value.get("op")
    if not isinstance(op, str):
        raise RequestError("bad_request", f"'op' must be a string, got {_type_name(op)}", request_id)
    if op not in OPS:
        raise RequestError("unknown_op", f"unknown op {op[:64]!r}; expected one of {', '.join(OPS)}", request_id)
    if op in ("list", "ping"):
        return Request(op, request_id, [])
    symbols = value.get("symbols")
    if not isinstance(symbols, list):
        raise RequestError("bad_request", f"'symbols' must be a list of strings, got {_type_name(symbols)}", request_id)
    if len(symbols) > max_symbols:
        raise RequestError("bad_request", f"'symbols' has {len(symbols)} entries; at most {max_symbols}", request_id)
    if op == "unsubscribe":
        return Request(op, request_id, symbols)
    throttle = value.get("throttle_ms")
    if throttle is not None and (isinstance(throttle, bool) or not isinstance(throttle, int)):
        raise RequestError("bad_request", f"'throttle_ms' must be an int, got {_type_name(throttle)}", request_id)
    snapshot = value.get("snapshot", True)
    if not isinstance(snapshot, bool):
        raise RequestError("bad_request", f"'snapshot' must be a bool, got {_type_name(snapshot)}", request_id)
    return Request(op, request_id, symbols, throttle, snapshot)


THROTTLE_STEP_MS = 10


def effective_throttle(requested: int | None, minimum: int, maximum: int) -> int:
    """A requested throttle (None means every tick) rounded up to a multiple of 10 ms
    (each distinct value costs the hub a timer), then clamped to the hub's limits."""
    value = max(0, 0 if requested is None else requested)
    value = -(-value // THROTTLE_STEP_MS) * THROTTLE_STEP_MS
    return max(minimum, min(maximum, value))


class RateLimiter:
    """A token bucket of `rate` requests per second (burst `rate`), with a strike count.

    `allow(now)` is False when the request is over the rate; `strikes` counts refused
    requests in the last second, and `exhausted` says the client keeps on regardless.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.tokens = float(rate)
        self.stamp = 0.0
        self.strikes = 0
        self.strike_window = 0.0

    def allow(self, now: float) -> bool:
        if self.stamp:
            self.tokens = min(float(self.rate), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        if now - self.strike_window > 1.0:
            self.strike_window = now
            self.strikes = 0
        self.strikes += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.strikes > self.rate
