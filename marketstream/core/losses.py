"""Ticks lost before the hub: seqs that the hub never received and history could not fill.

`conflated` counts the ticks a connection did not get although the hub received them;
a seq the hub never received is a loss, not a merge. The hub records such ranges here
(rare: an upstream loss past the history), and the outboxes subtract them when they
count `conflated`. In normal operation there is none and `between` is one dict lookup.
"""

from __future__ import annotations

MAX_RANGES = 64  # per symbol: older ranges are forgotten (counts across them may then be high)


class Losses:
    """Lost seq ranges per symbol, in the symbol's current epoch."""

    __slots__ = ("_ranges",)

    def __init__(self) -> None:
        self._ranges: dict[str, list[tuple[int, int]]] = {}  # symbol -> [(first, last)] lost, ascending

    def record(self, symbol: str, first: int, last: int) -> None:
        """Seqs `first`..`last` (inclusive) of `symbol` were lost before the hub."""
        if last < first:
            return
        ranges = self._ranges.setdefault(symbol, [])
        ranges.append((first, last))
        if len(ranges) > MAX_RANGES:
            del ranges[0]

    def between(self, symbol: str, after: int, before: int) -> int:
        """How many seqs strictly between `after` and `before` were lost."""
        ranges = self._ranges.get(symbol) if self._ranges else None
        if not ranges:
            return 0
        return sum(max(0, min(last, before - 1) - max(first, after + 1) + 1) for first, last in ranges)

    def reset(self, symbol: str) -> None:
        """A new epoch: seqs start again."""
        self._ranges.pop(symbol, None)
