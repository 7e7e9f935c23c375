"""The tick: one market update, and its form encoded once for every subscriber.

A tick is encoded exactly once, by the publisher, into both codecs. Everything after
that (the channel layer, the hub, the outbox, the frame) moves the same bytes around.
"""

from __future__ import annotations

import time
from typing import Any, TypedDict

import msgpack
import orjson


class Tick(TypedDict):
    """A tick as clients see it (PROTOCOL.md). More fields may follow."""

    symbol: str
    seq: int
    ts: int
    price: float
    size: float
    bid: float
    ask: float


class EncodedTick:
    """A tick's identity (symbol, seq) and its bytes in both codecs.

    Immutable by convention; shared by every outbox that holds it.
    """

    __slots__ = ("json", "msgpack", "seq", "symbol")

    def __init__(self, symbol: str, seq: int, msgpack: bytes, json: bytes) -> None:
        self.symbol = symbol
        self.seq = seq
        self.msgpack = msgpack
        self.json = json

    @classmethod
    def encode(cls, tick: Tick | dict[str, Any]) -> EncodedTick:
        """Encode a tick into both codecs: the only place tick data is serialized."""
        return cls(
            tick["symbol"],
            tick["seq"],
            msgpack.packb(tick, use_bin_type=True),
            orjson.dumps(tick),
        )

    def decode(self) -> Tick:
        """The tick as a dict (for HTTP views and tests; never on the tick path)."""
        tick: Tick = msgpack.unpackb(self.msgpack, raw=False)
        return tick

    def __repr__(self) -> str:
        return f"EncodedTick({self.symbol!r}, seq={self.seq})"


def now_ns() -> int:
    """Wall-clock time in nanoseconds since the Unix epoch (the unit of `ts`)."""
    return time.time_ns()
