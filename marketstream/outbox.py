"""The outbox: a connection's bounded pending frames and ticks. No I/O.

The hub puts ticks in; the connection's writer takes one frame's worth out at a time.
Contracts:

- seq per symbol only increases: a tick whose seq is not above the last one accepted
  for its symbol is dropped (`put` returns False).
- Control frames (replies, errors, snapshots) leave in the order they were added and
  before any tick still pending.
- Bounded: past `max_ticks` pending ticks the outbox conflates (keeps the latest tick
  of each symbol), so it never holds more ticks than the connection has symbols.
- `put_latest` (throttled subscriptions) replaces a pending tick of the same symbol.

Invariant: a symbol's tick in `latest` is newer than its ticks in `ticks`, so taking
`ticks` then `latest` keeps seq increasing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from marketstream.tick import EncodedTick


class Outbox:
    __slots__ = ("conflations", "controls", "last_seq", "latest", "max_ticks", "ticks")

    def __init__(self, max_ticks: int) -> None:
        self.controls: deque[bytes] = deque()
        self.ticks: list[EncodedTick] = []
        self.latest: dict[str, EncodedTick] = {}
        self.last_seq: dict[str, int] = {}
        self.max_ticks = max_ticks
        self.conflations = 0

    def __len__(self) -> int:
        return len(self.ticks) + len(self.latest)

    def __bool__(self) -> bool:
        return bool(self.controls or self.ticks or self.latest)

    def put(self, tick: EncodedTick) -> bool:
        """Queue a tick in order (throttle 0). False if dropped as old."""
        if tick.seq <= self.last_seq.get(tick.symbol, 0):
            return False
        self.last_seq[tick.symbol] = tick.seq
        ticks = self.ticks
        if self.latest and tick.symbol in self.latest:
            ticks.append(self.latest.pop(tick.symbol))  # keep the older tick first
        ticks.append(tick)
        if len(ticks) > self.max_ticks:
            self.conflate()
        return True

    def put_latest(self, tick: EncodedTick) -> bool:
        """Queue a tick, replacing a pending one of its symbol. False if dropped as old."""
        if tick.seq <= self.last_seq.get(tick.symbol, 0):
            return False
        self.last_seq[tick.symbol] = tick.seq
        self.latest[tick.symbol] = tick
        return True

    def conflate(self) -> None:
        """Keep only the latest pending tick of each symbol."""
        newest: dict[str, EncodedTick] = {}
        for tick in self.ticks:
            newest[tick.symbol] = tick
        for symbol, tick in newest.items():
            self.latest.setdefault(symbol, tick)  # a tick already in `latest` is newer
        self.ticks = []
        self.conflations += 1

    def add_control(self, frame: bytes) -> None:
        self.controls.append(frame)

    def accept_snapshot(self, ticks: Iterable[EncodedTick]) -> list[EncodedTick]:
        """Register snapshot ticks; return those to send (newer than anything sent).

        Pending live ticks of the same symbols that are not newer than the snapshot
        are removed, so seq keeps increasing across the snapshot frame.
        """
        accepted = [t for t in ticks if t.seq > self.last_seq.get(t.symbol, 0)]
        if not accepted:
            return accepted
        seqs = {t.symbol: t.seq for t in accepted}
        self.ticks = [t for t in self.ticks if t.seq > seqs.get(t.symbol, 0)]
        for symbol, seq in seqs.items():
            pending = self.latest.get(symbol)
            if pending is not None and pending.seq <= seq:
                del self.latest[symbol]
            self.last_seq[symbol] = max(seq, self.last_seq.get(symbol, 0))
        return accepted

    def discard(self, symbols: Iterable[str]) -> None:
        """Remove every pending tick of `symbols` (unsubscribe). Their seq is kept."""
        gone = set(symbols)
        if not gone:
            return
        self.ticks = [t for t in self.ticks if t.symbol not in gone]
        for symbol in gone:
            self.latest.pop(symbol, None)

    def take_ticks(self) -> list[EncodedTick]:
        """Remove and return the pending ticks, in an order that keeps seq increasing."""
        ticks = self.ticks
        if self.latest:
            ticks.extend(self.latest.values())
            self.latest = {}
        self.ticks = []
        return ticks
