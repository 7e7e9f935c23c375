"""Quotes from outside (HTTP ingest, replay files): validated field by field.

A quote is what a source gives: `symbol`, `price`, `size`, `bid`, `ask` and optionally
`src_ts`, the source's own time (int ns since the Unix epoch). The hub adds `ts` and
`seq`. Rules: the symbol as on the stream (1-32 of `A-Z 0-9 . - / : _`, upper-cased);
price, bid and ask finite and > 0 with bid <= ask; size finite and >= 0; src_ts an
integer in (0, 2**63).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from feeds.simulated import Quote, TimedQuote
from marketstream.core.symbols import normalize

FIELDS = ("symbol", "price", "size", "bid", "ask", "src_ts")
ASSIGNED = ("seq", "ts", "conflated")  # the hub's own fields: a source cannot set them


class BadQuote(ValueError):
    """A quote refused: `code` (`bad_symbol`, `missing_field`, `bad_field`,
    `unknown_field`, `bad_tick`), the `field` concerned ("" for the whole quote) and a
    `message` that says what was expected and what came."""

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "message": self.message}


def parse_quote(raw: object, *, strict: bool = True, text: bool = False) -> Quote | TimedQuote:
    """The quote in `raw` (a map). `strict` (HTTP ingest): a field not in FIELDS is
    refused; otherwise (replay) other fields are ignored. `text`: values are strings to
    convert (CSV). Raises BadQuote."""
    if not isinstance(raw, Mapping):
        raise BadQuote("bad_tick", "", f"a tick is a map of {', '.join(FIELDS)}; got {type(raw).__name__}")
    if strict:
        for name in raw:
            if name in ASSIGNED:
                raise BadQuote("unknown_field", str(name), f"{name} is assigned by the hub, not by a publisher")
            if name not in FIELDS:
                raise BadQuote("unknown_field", str(name), f"unknown field {str(name)[:32]!r}; expected {FIELDS}")
    symbol = normalize(_required(raw, "symbol"))
    if symbol is None:
        got = raw["symbol"]
        raise BadQuote("bad_symbol", "symbol", f"expected 1-32 characters of A-Z 0-9 . - / : _, got {got!r:.40}")
    price = _number(raw, "price", text, positive=True)
    size = _number(raw, "size", text, positive=False)
    bid = _number(raw, "bid", text, positive=True)
    ask = _number(raw, "ask", text, positive=True)
    if bid > ask:
        raise BadQuote("bad_field", "bid", f"bid must not be above ask, got bid {bid} > ask {ask}")
    src_ts = source_time(raw, "src_ts", text)
    if src_ts is None:
        return (symbol, price, size, bid, ask)
    return (symbol, price, size, bid, ask, src_ts)


def source_time(raw: Mapping[str, Any], name: str, text: bool = False) -> int | None:
    """The integer nanosecond time in `raw[name]`, None when absent (or empty in text)."""
    value = raw.get(name)
    if value is None or (text and value == ""):
        return None
    if text and isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise BadQuote("bad_field", name, f"{name}: expected an integer (ns), got {value!r:.40}") from None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**63:
        raise BadQuote("bad_field", name, f"{name}: expected an integer of ns since the Unix epoch, got {value!r:.40}")
    return value


def _required(raw: Mapping[str, Any], name: str) -> Any:
    if name not in raw or raw[name] is None:
        raise BadQuote("missing_field", name, f"{name} is required")
    return raw[name]


def _number(raw: Mapping[str, Any], name: str, text: bool, positive: bool) -> float:
    value = _required(raw, name)
    if text and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise BadQuote("bad_field", name, f"{name}: expected a number, got {value!r:.40}") from None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise BadQuote("bad_field", name, f"{name}: expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        want = "> 0" if positive else ">= 0"
        raise BadQuote("bad_field", name, f"{name}: expected a finite number {want}, got {value!r:.40}")
    return number
