"""What a client receives, as typed values: ticks, bars, acks and the stream's events.

Everything here is built from the server's maps (PROTOCOL.md, "Messages, server to
client"); fields the client does not know are ignored, as the protocol asks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Tick:
    """One tick of a symbol.

    `seq` numbers the symbol's ticks within its `epoch`; `ts` is when the tick entered
    the hub (ns since the Unix epoch), `src_ts` the source's own time when it gave one.
    `conflated` is how many ticks this one stands in for (your throttle, or the hub's
    slow-client conflation). `lost` is the client's own count of ticks skipped before
    this one that nobody accounted for: lost upstream of the hub, or missed while
    disconnected when recovery was not possible (0 in normal operation). `snapshot`
    says it came in a `snapshot` frame (the symbol's last tick, at subscribe).
    """

    symbol: str
    seq: int
    ts: int
    price: float
    size: float
    bid: float
    ask: float
    src_ts: int | None = None
    conflated: int = 0
    epoch: str = ""
    snapshot: bool = False
    lost: int = 0

    @classmethod
    def from_wire(cls, m: Mapping[str, Any], epoch: str = "", snapshot: bool = False) -> Tick:
        src_ts = m.get("src_ts")
        return cls(
            str(m["symbol"]),
            int(m["seq"]),
            int(m["ts"]),
            float(m["price"]),
            float(m["size"]),
            float(m["bid"]),
            float(m["ask"]),
            int(src_ts) if src_ts is not None else None,
            int(m.get("conflated", 0)),
            epoch,
            snapshot,
        )

    def as_dict(self) -> dict[str, Any]:
        """The tick as the server sent it (what `--record` writes and replay reads)."""
        out: dict[str, Any] = {
            "symbol": self.symbol,
            "seq": self.seq,
            "ts": self.ts,
            "price": self.price,
            "size": self.size,
            "bid": self.bid,
            "ask": self.ask,
        }
        if self.src_ts is not None:
            out["src_ts"] = self.src_ts
        if self.conflated:
            out["conflated"] = self.conflated
        return out


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar of a symbol over `interval` (`1s` `5s` `1m` `5m` `1h`), from `start`
    (ns, aligned in UTC). An open bar comes again, updated, as ticks come; `final` says
    its interval ended and it will not change."""

    symbol: str
    interval: str
    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    count: int
    final: bool

    @classmethod
    def from_wire(cls, m: Mapping[str, Any]) -> Bar:
        return cls(
            str(m["symbol"]),
            str(m["interval"]),
            int(m["start"]),
            float(m["open"]),
            float(m["high"]),
            float(m["low"]),
            float(m["close"]),
            float(m["volume"]),
            int(m["count"]),
            bool(m["final"]),
        )


@dataclass(frozen=True, slots=True)
class Ack:
    """The reply to a subscribe or unsubscribe: the symbols it applied to, the effective
    throttle, what was `rejected` (symbol -> code: `bad_symbol`, `unknown_symbol`,
    `forbidden`, `limit_exceeded`, `unavailable`), each symbol's `epoch`, and for a
    subscribe with `since`, whether each symbol was `recovered`."""

    op: str
    symbols: tuple[str, ...]
    throttle_ms: int | None = None
    rejected: Mapping[str, str] = field(default_factory=dict)
    epochs: Mapping[str, str] = field(default_factory=dict)
    recovered: Mapping[str, bool] = field(default_factory=dict)
    bars: tuple[str, ...] = ()

    @classmethod
    def from_wire(cls, m: Mapping[str, Any]) -> Ack:
        throttle = m.get("throttle_ms")
        return cls(
            str(m.get("op", "")),
            tuple(str(s) for s in m.get("symbols", ())),
            int(throttle) if throttle is not None else None,
            {str(k): str(v) for k, v in (m.get("rejected") or {}).items()},
            {str(k): str(v) for k, v in (m.get("epochs") or {}).items()},
            {str(k): bool(v) for k, v in (m.get("recovered") or {}).items()},
            tuple(str(b) for b in m.get("bars") or ()),
        )


@dataclass(frozen=True, slots=True)
class Welcome:
    """The hub's first frame: the session id, the encoding, and this key's limits."""

    session: str
    encoding: str
    server_time: int
    limits: Mapping[str, int]

    @classmethod
    def from_wire(cls, m: Mapping[str, Any]) -> Welcome:
        limits = {str(k): int(v) for k, v in (m.get("limits") or {}).items() if isinstance(v, int)}
        return cls(str(m.get("session", "")), str(m.get("encoding", "")), int(m.get("server_time", 0)), limits)


@dataclass(frozen=True, slots=True)
class Reset:
    """The symbol's seq restarted in a new `epoch` (its stored state was lost upstream);
    accounting starts again from its next tick."""

    symbol: str
    epoch: str


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """The hub ended these subscriptions itself: `reason` is `forbidden` (the key lost the
    entitlement) or `unavailable` (the symbol's shard is gone). The client forgets them."""

    symbols: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection was opened (`attempt` 0 is the first); every subscription held is
    being sent again, with `since` for the symbols that have ticks. Whether each was
    recovered is in `Client.recovered` once the acks came."""

    welcome: Welcome
    attempt: int


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection ended with `code` (1006: no close frame) and `reason`; the client
    reconnects after `retry_in` seconds."""

    code: int
    reason: str
    retry_in: float


Event = Tick | Bar | Reset | Unsubscribed | Connected | Disconnected
