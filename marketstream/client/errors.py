"""The client's exceptions, and what it does on each close code and refused handshake.

PROTOCOL.md, "Close codes": 1012 reconnect at once; 1013, 1011 (and a connection lost
without a close frame) reconnect with backoff; 1008, 1009, 4001, 4003 and a refused
handshake (HTTP 403) are the caller's to fix: the client raises, it does not loop.
"""

from __future__ import annotations

from enum import Enum


class ClientError(Exception):
    """Every error of `marketstream.client`."""


class Refused(ClientError):
    """The hub refused the handshake with HTTP `status` (403: missing, bad, revoked or
    expired key, or an origin not allowed; 400: a bad request such as an unknown
    encoding). `reason` is the hub's one-line explanation. Not retried."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"the hub refused the connection: HTTP {status}: {reason or '(no reason given)'}")
        self.status = status
        self.reason = reason


class Closed(ClientError):
    """The hub closed the connection with a code that reconnecting cannot fix."""

    def __init__(self, code: int, reason: str, advice: str) -> None:
        super().__init__(f"closed by the hub with {code} ({reason or 'no reason given'}): {advice}")
        self.code = code
        self.reason = reason


class PolicyViolation(Closed):
    """1008: requests kept coming faster than `max_requests_per_s`."""


class MessageTooBig(Closed):
    """1009: a request was larger than `max_message_bytes`."""


class KeyOverLimit(Closed):
    """4001: the key has as many connections as it may; close another before reconnecting."""


class KeyRevoked(Closed):
    """4003: the key was revoked, disabled or expired. Do not reconnect with it."""


class RequestError(ClientError):
    """The hub answered a request with an `error` (`code`: `bad_request`, `unknown_op`,
    `rate_limited`, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionLost(ClientError):
    """The connection ended before a request's reply came (the request's subscriptions
    are kept and sent again on the next connection), or it ended and reconnecting is
    off."""


class Policy(Enum):
    """What the client does after a close."""

    AT_ONCE = "reconnect at once"
    BACKOFF = "reconnect with backoff"
    RAISE = "raise"


FATAL: dict[int, tuple[type[Closed], str]] = {
    1008: (PolicyViolation, "the client sent requests faster than the hub allows; fix the client"),
    1009: (MessageTooBig, "the client sent a frame larger than max_message_bytes; fix the client"),
    4001: (KeyOverLimit, "the key is at its connection limit; close another connection first"),
    4003: (KeyRevoked, "the key was revoked or expired; do not reconnect with it"),
}


def policy(code: int) -> Policy:
    """The client's policy after the hub closed with `code` (1006: no close frame)."""
    if code in FATAL:
        return Policy.RAISE
    if code == 1012:
        return Policy.AT_ONCE
    return Policy.BACKOFF  # 1013, 1011, 1006, and anything unexpected (1000/1001 unasked)


def closed_error(code: int, reason: str) -> Closed:
    """The exception for a close that is not retried."""
    kind, advice = FATAL.get(code, (Closed, "not retried"))
    return kind(code, reason, advice)


def retried_status(status: int) -> bool:
    """Whether a handshake refused with HTTP `status` is worth trying again: the hub is
    starting, overloaded or behind a proxy that has no backend (5xx, 429)."""
    return status >= 500 or status in (408, 429)
