"""Bars: OHLCV over an interval, computed once by the seq authority, and their encoding.

A bar of a symbol and an interval covers the ticks whose `ts` falls in
`[start, start + interval)`, `start` aligned to the interval in UTC (a multiple of the
interval since the Unix epoch, which is UTC midnight). `open` is the first tick's price,
`high`/`low` the extremes, `close` the last price, `volume` the sum of the sizes in seq
order, `count` the number of ticks. Bars are made only by ticks: an interval without a
tick has no bar.

`BarBook` is the bar state of the embedded default (`MemoryStore`); on Redis the same
rules run in bars.lua, inside the script that assigns seq (see docs/design.md, "Bars").
The rules, identical in both:

- a tick of the current bar's start updates it; a tick of a later start makes the current
  bar `final` (if it was not yet) and opens the next one;
- `finalize(now)` makes final every open bar whose interval ended at or before `now` (the
  publisher's timer), so a bar ends on time even when no tick comes;
- a tick whose bar is already final, or older than the current bar (a publisher whose
  clock is behind another's), is late: it counts in no bar;
- the last `keep` final bars of each symbol and interval are kept.

The hub never computes bars: it receives `BarUpdate`s (the bars a batch of ticks or a
finalization changed) and fans them out as `EncodedBar`s, encoded once per process.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson

# the intervals offered (PROTOCOL.md), in seconds, shortest first: the order of `list` and of updates
INTERVALS: dict[str, int] = {"1s": 1, "5s": 5, "1m": 60, "5m": 300, "1h": 3600}
NS = 1_000_000_000
DEFAULT_KEEP = 500  # final bars kept per symbol and interval (MARKETSTREAM_BARS_KEEP)


def bar_start(ts_ns: int, seconds: int) -> int:
    """The start (whole seconds since the epoch) of the bar of `seconds` that holds `ts_ns`."""
    second = ts_ns // NS
    return second - second % seconds


@dataclass(slots=True)
class Bar:
    """One bar. `start` is in whole seconds here (ns on the wire: `start * 10**9`)."""

    symbol: str
    interval: str
    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    count: int
    final: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The bar as clients see it (PROTOCOL.md): `start` in ns, prices as floats."""
        return {
            "symbol": self.symbol,
            "interval": self.interval,
            "start": self.start * NS,
            "open": float(self.open),
            "high": float(self.high),
            "low": float(self.low),
            "close": float(self.close),
            "volume": float(self.volume),
            "count": int(self.count),
            "final": self.final,
        }

    def copy(self) -> Bar:
        """A copy that later ticks do not change."""
        return Bar(
            self.symbol,
            self.interval,
            self.start,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            self.count,
            self.final,
        )


@dataclass(frozen=True, slots=True)
class BarUpdate:
    """What one publish (or one finalization) changed of a symbol's bars: each changed
    bar once, the final ones of a start before the open one of the next."""

    symbol: str
    bars: list[Bar]


class EncodedBar:
    """A bar encoded once per process for every subscriber (msgpack, and JSON when asked).

    `rank` orders the versions of one bar (`key`): a later version has more ticks, and the
    final one ranks above every open one, so conflation never replaces a final bar."""

    __slots__ = ("_json", "bar", "key", "msgpack", "rank", "symbol")

    def __init__(self, bar: Bar) -> None:
        self.bar = bar
        self.symbol = bar.symbol
        self.key = (bar.symbol, bar.interval, bar.start)
        self.rank = (bar.final, bar.count)
        self.msgpack = msgpack.packb(bar.as_dict())
        self._json: bytes | None = None

    @property
    def json(self) -> bytes:
        if self._json is None:
            self._json = orjson.dumps(self.bar.as_dict())
        return self._json

    def __repr__(self) -> str:
        b = self.bar
        return f"EncodedBar({b.symbol!r}, {b.interval}, start={b.start}, count={b.count}, final={b.final})"


def parse_intervals(value: Any) -> tuple[str, ...]:
    """A request's `bars`: a list of interval names, each once, in `INTERVALS` order.
    Raises ValueError naming what was expected."""
    if not isinstance(value, list):
        raise ValueError(f"'bars' must be a list of intervals, got {type(value).__name__}")
    wanted = set()
    for item in value:
        if not isinstance(item, str) or item not in INTERVALS:
            raise ValueError(f"'bars' has {str(item)[:16]!r}; intervals are {', '.join(INTERVALS)}")
        wanted.add(item)
    return tuple(i for i in INTERVALS if i in wanted)


class BarBook:
    """The bars of the embedded default: the open bar of each symbol and interval, and the
    last `keep` final ones. Same rules as bars.lua (module docstring)."""

    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        self.keep = keep
        self.current: dict[str, dict[str, Bar]] = {}  # symbol -> interval -> its newest bar
        self.finals: dict[tuple[str, str], collections.deque[Bar]] = {}
        self.late = 0  # ticks too late for their bar

    def update(self, symbol: str, ts_ns: int, price: float, size: float, changed: dict[tuple[str, int], Bar]) -> None:
        """Count one tick in the bars of its symbol; put each bar it changes into `changed`
        (keyed by interval and start, in the order they changed)."""
        bars = self.current.setdefault(symbol, {})
        for interval, seconds in INTERVALS.items():
            start = bar_start(ts_ns, seconds)
            bar = bars.get(interval)
            if bar is not None and bar.start == start and not bar.final:
                bar.high = max(bar.high, price)
                bar.low = min(bar.low, price)
                bar.close = price
                bar.volume += size
                bar.count += 1
            elif bar is not None and start <= bar.start:
                self.late += 1
                continue
            else:
                if bar is not None:
                    self._final(bar, changed)
                bar = bars[interval] = Bar(symbol, interval, start, price, price, price, price, size, 1)
            changed[(interval, start)] = bar

    def finalize(self, symbols: Iterable[str], now_ns: int) -> list[BarUpdate]:
        """Make final every open bar of `symbols` whose interval ended by `now_ns`."""
        now = now_ns / NS
        updates = []
        for symbol in symbols:
            changed: dict[tuple[str, int], Bar] = {}
            for bar in self.current.get(symbol, {}).values():
                if not bar.final and bar.start + INTERVALS[bar.interval] <= now:
                    self._final(bar, changed)
            if changed:
                updates.append(BarUpdate(symbol, [b.copy() for b in changed.values()]))
        return updates

    def _final(self, bar: Bar, changed: dict[tuple[str, int], Bar]) -> None:
        if bar.final:
            return
        bar.final = True
        if self.keep > 0:
            kept = self.finals.get((bar.symbol, bar.interval))
            if kept is None:
                kept = self.finals[(bar.symbol, bar.interval)] = collections.deque(maxlen=self.keep)
            kept.append(bar.copy())
        changed[(bar.interval, bar.start)] = bar

    def recent(self, symbol: str, interval: str, limit: int) -> list[Bar]:
        """The last `limit` bars, oldest first: the kept final ones, then the open one."""
        bars = list(self.finals.get((symbol, interval), ()))
        bar = self.current.get(symbol, {}).get(interval)
        if bar is not None and not bar.final:
            bars.append(bar.copy())
        return bars[-limit:] if limit > 0 else []

    def open_bars(self, symbol: str) -> list[Bar]:
        """The newest bar of each interval of `symbol` (open, or final until the next opens)."""
        return [b.copy() for b in self.current.get(symbol, {}).values()]

    def forget(self, symbol: str) -> None:
        self.current.pop(symbol, None)
        for interval in INTERVALS:
            self.finals.pop((symbol, interval), None)
