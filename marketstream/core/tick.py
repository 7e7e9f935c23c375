"""The tick: one market update, and its form encoded once for every subscriber.

A tick is encoded once, by the publisher, into both codecs, as a `Draft`: every field
but `seq`, which comes last. The seq authority (the store, or the publish script on
Redis) completes the draft with the symbol's next seq, appending the same bytes either
way. Everything after that (the channel layer, the hub, the outbox, the frame) moves the
same bytes around; the only later change is `with_conflated`, once per delivered count.
"""

from __future__ import annotations

import time
from typing import Any, NotRequired, TypedDict

import msgpack
import orjson

_SEQ_KEY = msgpack.packb("seq")
_CONFLATED_KEY = msgpack.packb("conflated")


class Tick(TypedDict):
    """A tick as clients see it (PROTOCOL.md). More fields may follow."""

    symbol: str
    seq: int
    ts: int
    price: float
    size: float
    bid: float
    ask: float
    src_ts: NotRequired[int]
    conflated: NotRequired[int]


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x80 | n,))
    return b"\xde" + n.to_bytes(2, "big")


def _grow_map(packed: bytes) -> bytes:
    """A msgpack map with one more entry counted (the entry itself is appended after)."""
    head = packed[0]
    if 0x80 <= head < 0x8F:
        return bytes((head + 1,)) + packed[1:]
    if head == 0x8F:
        return b"\xde\x00\x10" + packed[1:]
    if head == 0xDE:
        return b"\xde" + (int.from_bytes(packed[1:3], "big") + 1).to_bytes(2, "big") + packed[3:]
    raise ValueError(f"not a msgpack map of fewer than 65535 entries: first byte {head:#x}")


class Draft:
    """A tick before its seq: its symbol and its encoding up to the value of `seq`.

    `msgpack_head` is a map header counting `seq`, every other field, and the key
    "seq"; `json_head` is the JSON object up to `"seq":`. Completing appends the seq
    (and `}` in JSON): publish.lua does exactly the same on Redis. `ts`, `price` and
    `size` are what the seq authority computes bars from (core/bars.py); a draft without
    a price counts in no bar.
    """

    __slots__ = ("json_head", "msgpack_head", "price", "size", "symbol", "ts")

    def __init__(
        self,
        symbol: str,
        msgpack_head: bytes,
        json_head: bytes,
        ts: int = 0,
        price: float | None = None,
        size: float = 0.0,
    ) -> None:
        self.symbol = symbol
        self.msgpack_head = msgpack_head
        self.json_head = json_head
        self.ts = ts
        self.price = price
        self.size = size

    @classmethod
    def encode(cls, fields: dict[str, Any]) -> Draft:
        """Encode a tick's fields (`symbol` first, no `seq`) into both codecs, once."""
        if "seq" in fields or "conflated" in fields:
            raise ValueError("a draft has no seq and no conflated: the seq authority and the hub add them")
        n = len(fields)
        # one packb of the whole map, its header replaced by one that also counts `seq`
        body = msgpack.packb(fields, use_bin_type=True)[1 if n < 16 else 3 :]
        price = fields.get("price")
        return cls(
            fields["symbol"],
            _map_header(n + 1) + body + _SEQ_KEY,
            orjson.dumps(fields)[:-1] + b',"seq":',
            int(fields.get("ts", 0)),
            float(price) if isinstance(price, (int, float)) else None,
            float(fields.get("size", 0.0)),
        )

    def complete(self, seq: int, epoch: str = "") -> EncodedTick:
        """The tick with its seq."""
        return EncodedTick(
            self.symbol, seq, self.msgpack_head + msgpack.packb(seq), self.json_head + b"%d}" % seq, epoch
        )


class EncodedTick:
    """A tick's identity (symbol, seq, epoch) and its bytes in both codecs.

    Immutable by convention; shared by every outbox that holds it. `conflated` is the
    count carried in the bytes (0: none); such a variant comes from `with_conflated`.
    No tick refers back to itself or to a tick that refers to it: ticks are freed by
    reference counting the moment the last outbox lets go (a cycle per tick would leave
    them all to the cyclic garbage collector, which costs the tick path CPU and memory).
    """

    __slots__ = ("_plain", "_variant", "conflated", "epoch", "json", "msgpack", "seq", "symbol")

    def __init__(
        self,
        symbol: str,
        seq: int,
        msgpack: bytes,
        json: bytes,
        epoch: str = "",
        conflated: int = 0,
        plain: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.symbol = symbol
        self.seq = seq
        self.msgpack = msgpack
        self.json = json
        self.epoch = epoch
        self.conflated = conflated
        self._plain = plain  # a variant's bytes without `conflated`
        self._variant: EncodedTick | None = None  # the last variant made: shared by its subscribers

    @classmethod
    def encode(cls, tick: Tick | dict[str, Any], epoch: str = "") -> EncodedTick:
        """Encode a whole tick into both codecs (tests, and history read back from Redis)."""
        return cls(
            tick["symbol"],
            tick["seq"],
            msgpack.packb(tick, use_bin_type=True),
            orjson.dumps(tick),
            epoch,
        )

    @property
    def base(self) -> EncodedTick:
        """The tick without `conflated` (itself when it carries none)."""
        plain = self._plain
        if plain is None:
            return self
        return EncodedTick(self.symbol, self.seq, plain[0], plain[1], self.epoch)

    def with_conflated(self, n: int) -> EncodedTick:
        """This tick carrying `conflated: n` (n > 0; 0 gives the base tick), made once per
        count in a row from a base tick, so that the subscribers of one throttle bucket
        share one encoding."""
        if self._plain is not None:
            return self.base.with_conflated(n)
        if n <= 0:
            return self
        variant = self._variant
        if variant is None or variant.conflated != n:
            variant = self._variant = EncodedTick(
                self.symbol,
                self.seq,
                _grow_map(self.msgpack) + _CONFLATED_KEY + msgpack.packb(n),
                self.json[:-1] + b',"conflated":%d}' % n,
                self.epoch,
                n,
                (self.msgpack, self.json),
            )
        return variant

    def decode(self) -> Tick:
        """The tick as a dict (for HTTP views and tests; never on the tick path)."""
        tick: Tick = msgpack.unpackb(self.msgpack, raw=False)
        return tick

    def __repr__(self) -> str:
        extra = f", conflated={self.conflated}" if self.conflated else ""
        return f"EncodedTick({self.symbol!r}, seq={self.seq}, epoch={self.epoch!r}{extra})"


def now_ns() -> int:
    """Wall-clock time in nanoseconds since the Unix epoch (the unit of `ts`)."""
    return time.time_ns()
