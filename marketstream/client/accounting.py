"""Per-symbol seq accounting: every seq a client skips is conflated, lost or missed.

PROTOCOL.md: for each symbol, after a snapshot (or the first tick), `seq - previous_seq -
1 - conflated` is the number of ticks lost before the hub; 0 in normal operation. The
client adds what the hub cannot know: ticks missed while it was disconnected when the
hub could not recover them (`recovered: false`, a snapshot instead). Seq only counts
within an epoch: a `reset`, or an ack whose epoch differs from the one held, starts the
symbol's accounting again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from marketstream.client.events import Tick

Mode = Literal["anchor", "live", "missed"]


@dataclass
class SymbolStats:
    """What one symbol's stream held so far.

    - `ticks`: ticks received (snapshots included), `conflated`: ticks they stood in for;
    - `lost`: seqs skipped that nobody accounted for (lost upstream of the hub);
    - `missed`: seqs skipped across a reconnect that the hub could not recover;
    - `resets`: new epochs; `duplicates`: ticks dropped because their seq did not
      increase (never, from a hub that keeps the protocol).
    """

    epoch: str = ""
    last_seq: int = 0  # 0: no tick in this epoch yet
    ticks: int = 0
    conflated: int = 0
    lost: int = 0
    missed: int = 0
    resets: int = 0
    duplicates: int = 0
    mode: Mode = "anchor"  # anchor: the next tick starts the count; missed: a recovery failed

    @property
    def gaps(self) -> int:
        """Seqs skipped and not conflated: `lost + missed`."""
        return self.lost + self.missed


class Accounting:
    """The stats of every symbol a client has seen, updated frame by frame."""

    def __init__(self) -> None:
        self.symbols: dict[str, SymbolStats] = {}

    def stats(self, symbol: str) -> SymbolStats:
        found = self.symbols.get(symbol)
        if found is None:
            found = self.symbols[symbol] = SymbolStats()
        return found

    def tick(self, m: Mapping[str, Any], snapshot: bool = False) -> Tick | None:
        """Account for one tick of a `snapshot` or `ticks` frame; the typed tick, or None
        when it is dropped because its seq does not increase."""
        symbol = str(m["symbol"])
        s = self.stats(symbol)
        seq = int(m["seq"])
        conflated = int(m.get("conflated", 0))
        lost = 0
        if s.last_seq and seq <= s.last_seq:
            if s.mode == "live":
                s.duplicates += 1
            return None  # a snapshot after a failed recovery may repeat the last tick held
        if s.last_seq and s.mode != "anchor":
            skipped = max(0, seq - s.last_seq - 1 - conflated)
            if s.mode == "missed":
                s.missed += skipped
            else:
                s.lost += skipped
            lost = skipped
        s.mode = "live"
        s.last_seq = seq
        s.ticks += 1
        s.conflated += conflated
        tick = Tick.from_wire(m, s.epoch, snapshot)
        return dataclasses.replace(tick, lost=lost) if lost else tick

    def epochs(self, epochs: Mapping[str, str]) -> list[str]:
        """Take the epochs of an ack; returns the symbols whose epoch changed while held
        (their accounting starts again, as after a `reset`)."""
        changed = []
        for symbol, epoch in epochs.items():
            s = self.stats(symbol)
            if s.epoch and s.epoch != epoch:
                self._restart(s)
                changed.append(symbol)
            s.epoch = epoch
        return changed

    def reset(self, symbol: str, epoch: str) -> None:
        """A `reset` frame: the symbol's seq restarts in `epoch`."""
        s = self.stats(symbol)
        self._restart(s)
        s.epoch = epoch

    def recovered(self, results: Mapping[str, bool]) -> None:
        """The `recovered` map of a resubscribe's ack: where recovery failed, the seqs
        skipped before the snapshot that comes instead count as missed."""
        for symbol, ok in results.items():
            s = self.stats(symbol)
            if not ok and s.last_seq:
                s.mode = "missed"

    def unsubscribed(self, symbols: list[str] | tuple[str, ...]) -> None:
        """The symbols are no longer subscribed: a later subscription starts a new count."""
        for symbol in symbols:
            if symbol in self.symbols:
                self.symbols[symbol].mode = "anchor"

    def since(self, symbols: list[str]) -> dict[str, Any]:
        """`since` for a resubscribe: what is held of each of `symbols` that has ticks
        (`{seq, epoch}`, or the seq alone while the epoch is not known)."""
        out: dict[str, Any] = {}
        for symbol in symbols:
            s = self.symbols.get(symbol)
            if s is not None and s.last_seq and s.mode != "anchor":
                out[symbol] = {"seq": s.last_seq, "epoch": s.epoch} if s.epoch else s.last_seq
        return out

    def _restart(self, s: SymbolStats) -> None:
        s.resets += 1
        s.last_seq = 0
        s.mode = "anchor"
