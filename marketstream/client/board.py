"""The terminal client's state: one row per symbol, and the connection's status. No I/O.

`change` is measured from the symbol's `reference` in the catalog when the hub gives one
(PROTOCOL.md, `GET /api/v1/symbols`), else from the first price this client received.
`updates/s` counts the ticks received over the last `WINDOW` seconds; `gaps` is the
symbol's `lost + missed` (accounting.SymbolStats): 0 while nothing was lost.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from marketstream.client.accounting import SymbolStats
from marketstream.client.events import Connected, Disconnected, Event, Reset, Tick, Unsubscribed

WINDOW = 5.0  # seconds over which updates/s is counted


@dataclass
class Row:
    symbol: str
    last: float | None = None
    bid: float | None = None
    ask: float | None = None
    reference: float | None = None
    seen: collections.deque[float] = field(default_factory=collections.deque)  # receive times in the window

    @property
    def change(self) -> float | None:
        if self.last is None or self.reference is None:
            return None
        return self.last - self.reference

    @property
    def change_pct(self) -> float | None:
        change = self.change
        if change is None or not self.reference:
            return None
        return 100.0 * change / self.reference


class Board:
    """What the terminal shows, updated event by event."""

    def __init__(
        self,
        symbols: list[str],
        references: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rows = {s: Row(s) for s in symbols}
        self.references = dict(references or {})
        self.clock = clock
        self.status = "connecting"
        self.reconnects = 0
        self.ticks = 0

    def apply(self, event: Event) -> None:
        if isinstance(event, Tick):
            self.tick(event)
        elif isinstance(event, Connected):
            self.status = f"connected (session {event.welcome.session})"
            self.reconnects = event.attempt
        elif isinstance(event, Disconnected):
            self.status = f"closed with {event.code}; reconnecting in {event.retry_in:.1f} s"
        elif isinstance(event, Reset):
            self.status = f"{event.symbol}: new epoch {event.epoch}"
        elif isinstance(event, Unsubscribed):
            for symbol in event.symbols:
                self.rows.pop(symbol, None)
            self.status = f"the hub ended {', '.join(event.symbols)}: {event.reason}"

    def tick(self, tick: Tick) -> None:
        row = self.rows.get(tick.symbol)
        if row is None:
            row = self.rows[tick.symbol] = Row(tick.symbol)
        if row.reference is None:
            row.reference = self.references.get(tick.symbol, tick.price)
        row.last, row.bid, row.ask = tick.price, tick.bid, tick.ask
        row.seen.append(self.clock())
        self.ticks += 1

    def rate(self, row: Row) -> float:
        """Ticks per second received of the row's symbol over the last WINDOW seconds."""
        now = self.clock()
        seen = row.seen
        while seen and seen[0] < now - WINDOW:
            seen.popleft()
        return len(seen) / WINDOW

    def lines(self, stats: Mapping[str, SymbolStats]) -> list[tuple[str, ...]]:
        """The table's rows as text: symbol, last, bid, ask, change, change %, updates/s,
        gaps, conflated."""
        out: list[tuple[str, ...]] = []
        for symbol, row in self.rows.items():
            s = stats.get(symbol) or SymbolStats()
            change, pct = row.change, row.change_pct
            out.append(
                (
                    symbol,
                    _num(row.last),
                    _num(row.bid),
                    _num(row.ask),
                    f"{change:+.4g}" if change is not None else "-",
                    f"{pct:+.2f}%" if pct is not None else "-",
                    f"{self.rate(row):.1f}",
                    str(s.gaps),
                    str(s.conflated),
                )
            )
        return out


COLUMNS = ("symbol", "last", "bid", "ask", "change", "chg %", "upd/s", "gaps", "confl.")


def _num(value: float | None) -> str:
    return f"{value:.6g}" if value is not None else "-"
