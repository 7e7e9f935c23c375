"""Client requests: everything about checking one, in one place. Pure; no I/O.

`parse` turns a decoded frame into a `Request` or raises `RequestError(code, message)`
with a message that names what was expected and what came. Symbols are normalized here
(upper-cased, each once, in order); the invalid ones do not fail the request but come
back in `Request.rejected` as `bad_symbol`. What depends on the connection (its limits,
its subscriptions, the catalog) is decided by the hub's subscribe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from marketstream.core.bars import parse_intervals
from marketstream.core.symbols import normalize

Op = Literal["subscribe", "unsubscribe", "list", "ping"]
OPS: tuple[Op, ...] = ("subscribe", "unsubscribe", "list", "ping")
_BY_NAME: dict[str, Op] = {op: op for op in OPS}
# Symbols one request may name. Over max_subscriptions is fine: those past the limit are
# rejected one by one with limit_exceeded; this bound only keeps one request's work small.
MAX_SYMBOLS_PER_REQUEST = 10_000
MAX_ID_LENGTH = 128


class RequestError(Exception):
    """A request refused as a whole: `code` is PROTOCOL.md's error code."""

    def __init__(self, code: str, message: str, request_id: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Request:
    """A checked request. `symbols` are valid and normalized, each once, in request order;
    `rejected` maps the invalid ones (as sent, cut to 64 characters) to `bad_symbol`."""

    op: Op
    id: int | str | None
    symbols: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    throttle_ms: int | None = None
    snapshot: bool = True
    # recovery: symbol -> (the last seq the client holds, its epoch or None for "the current one")
    since: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    # bar intervals of the symbols (in INTERVALS order); None: as before (none for new symbols)
    bars: tuple[str, ...] | None = None


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _valid_id(rid: object) -> bool:
    if rid is None:
        return True
    if isinstance(rid, bool) or not isinstance(rid, (int, str)):
        return False
    return not (isinstance(rid, str) and len(rid) > MAX_ID_LENGTH)


def request_id(value: Any) -> int | str | None:
    """The request's `id` if it has a valid one (for replies to requests refused early)."""
    rid = value.get("id") if isinstance(value, dict) else None
    return rid if _valid_id(rid) else None


def normalized(raws: list[Any]) -> tuple[list[str], dict[str, str]]:
    """The valid symbols of `raws`, upper-cased, each once, in order; and the invalid
    ones as `rejected` entries (`bad_symbol`)."""
    symbols: dict[str, None] = {}  # a dict keeps order and dedupes in O(1)
    rejected: dict[str, str] = {}
    for raw in raws:
        symbol = normalize(raw)
        if symbol is None:
            rejected[str(raw)[:64]] = "bad_symbol"
        else:
            symbols[symbol] = None
    return list(symbols), rejected


def parse(value: Any, max_symbols: int = MAX_SYMBOLS_PER_REQUEST) -> Request:
    """Check a decoded frame as a request (PROTOCOL.md, client to server)."""
    if not isinstance(value, dict):
        raise RequestError("bad_request", f"expected a map with 'op', got {_type_name(value)}")
    rid = value.get("id")
    if not _valid_id(rid):
        if isinstance(rid, str):
            raise RequestError("bad_request", f"'id' is longer than {MAX_ID_LENGTH} characters")
        raise RequestError("bad_request", f"'id' must be an int or a string, got {_type_name(rid)}")
    op = value.get("op")
    if not isinstance(op, str):
        raise RequestError("bad_request", f"'op' must be a string, got {_type_name(op)}", rid)
    kind = _BY_NAME.get(op)
    if kind is None:
        raise RequestError("unknown_op", f"unknown op {op[:64]!r}; expected one of {', '.join(OPS)}", rid)
    if kind == "list" or kind == "ping":
        return Request(kind, rid)
    raws = value.get("symbols")
    if not isinstance(raws, list):
        raise RequestError("bad_request", f"'symbols' must be a list of strings, got {_type_name(raws)}", rid)
    if len(raws) > max_symbols:
        raise RequestError("bad_request", f"'symbols' has {len(raws)} entries; at most {max_symbols}", rid)
    if kind == "unsubscribe":
        return Request(kind, rid, *normalized(raws))
    throttle = value.get("throttle_ms")
    if throttle is not None and (isinstance(throttle, bool) or not isinstance(throttle, int)):
        raise RequestError("bad_request", f"'throttle_ms' must be an int, got {_type_name(throttle)}", rid)
    snapshot = value.get("snapshot", True)
    if not isinstance(snapshot, bool):
        raise RequestError("bad_request", f"'snapshot' must be a bool, got {_type_name(snapshot)}", rid)
    bars = value.get("bars")
    if bars is not None:
        try:
            bars = parse_intervals(bars)
        except ValueError as exc:
            raise RequestError("bad_request", str(exc), rid) from None
    symbols, rejected = normalized(raws)
    return Request(kind, rid, symbols, rejected, throttle, snapshot, _since(value.get("since"), rid), bars)


def _since(value: Any, rid: int | str | None) -> dict[str, tuple[int, str | None]]:
    """`since`: a map symbol -> seq, or symbol -> {"seq": seq, "epoch": epoch}."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError("bad_request", f"'since' must be a map of symbol to seq, got {_type_name(value)}", rid)
    if len(value) > MAX_SYMBOLS_PER_REQUEST:
        raise RequestError("bad_request", f"'since' has {len(value)} entries; at most {MAX_SYMBOLS_PER_REQUEST}", rid)
    since: dict[str, tuple[int, str | None]] = {}
    for raw, entry in value.items():
        symbol = normalize(raw)
        if symbol is None:
            raise RequestError("bad_request", f"'since' names {str(raw)[:64]!r}, which is not a symbol", rid)
        seq, epoch = (entry.get("seq"), entry.get("epoch")) if isinstance(entry, dict) else (entry, None)
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise RequestError("bad_request", f"'since' for {symbol}: seq must be an int >= 0, got {seq!r:.40}", rid)
        if epoch is not None and (not isinstance(epoch, str) or len(epoch) > 64):
            raise RequestError("bad_request", f"'since' for {symbol}: epoch must be a short string", rid)
        since[symbol] = (seq, epoch)
    return since


class RateLimiter:
    """A token bucket of `rate` requests per second (burst `rate`), with a strike count.

    `allow(now)` is False when the request is over the rate; `strikes` counts refused
    requests in the last second, and `exhausted` says the client keeps on regardless.
    """

    __slots__ = ("rate", "stamp", "strike_window", "strikes", "tokens")

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
