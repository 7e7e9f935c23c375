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
- Accounted conflation: a tick that stands in for ticks the connection did not get
  carries their number in `conflated` (throttle and slow-client conflation alike; the
  outbox's `conflated` counter adds up the ticks so superseded, once each), so
  for each symbol `seq - previous_seq - 1 - conflated` is the number of ticks lost
  before the hub (`Losses`), 0 in normal operation.

Invariant: a symbol's tick in `latest` is newer than its ticks in `ticks`, so taking
`ticks` then `latest` keeps seq increasing.

Bars (only for connections that asked for them) wait in `bars`, conflated per symbol,
interval and start: a newer version of a bar replaces the pending one, a final bar is
never replaced by an open one, and the bars of different starts (a final one and the
next open one) both stay. They leave in `bars` frames after the pending ticks.
"""

from __future__ import annotations

from collections.abc import Iterable

from marketstream.core.bars import EncodedBar
from marketstream.core.losses import Losses
from marketstream.core.tick import EncodedTick

BarKey = tuple[str, str, int]  # symbol, interval, start
CHECK_SIZE_FROM = 256  # `take_ticks` adds up sizes only for frames of more ticks than this


class Outbox:
    __slots__ = ("bars", "conflated", "conflations", "controls", "last_seq", "latest", "losses", "max_ticks", "ticks")

    def __init__(self, max_ticks: int, losses: Losses | None = None) -> None:
        self.controls: list[bytes] = []  # few at a time; a list is 10x smaller than a deque
        self.ticks: list[EncodedTick] = []
        self.latest: dict[str, EncodedTick] = {}
        self.last_seq: dict[str, int] = {}
        self.max_ticks = max_ticks
        self.conflations = 0
        self.conflated = 0  # ticks superseded by conflation so far (the sum of `conflated` put on ticks)
        self.losses = losses if losses is not None else Losses()  # the hub's: seqs never received
        self.bars: dict[BarKey, EncodedBar] | None = None  # made for the first bar

    def __len__(self) -> int:
        return len(self.ticks) + len(self.latest)

    def __bool__(self) -> bool:
        return bool(self.controls or self.ticks or self.latest or self.bars)

    def put_bar(self, bar: EncodedBar) -> bool:
        """Queue a bar, replacing a pending older version of it (never a final one by an
        open one). False if what is pending is as new. Past `max_ticks` pending bars the
        connection counts as behind (a slow client)."""
        bars = self.bars
        if bars is None:
            bars = self.bars = {}
        held = bars.get(bar.key)
        if held is not None and held.rank >= bar.rank:
            return False
        bars[bar.key] = bar
        if len(bars) > self.max_ticks and held is None:
            self.conflations += 1
        return True

    def take_bars(self) -> list[EncodedBar]:
        """Remove and return the pending bars, in the order they were first queued."""
        bars = self.bars
        self.bars = None
        return list(bars.values()) if bars else []

    def discard_bars(self, symbols: Iterable[str], keep: Iterable[str] = ()) -> None:
        """Remove the pending bars of `symbols`, but those of the intervals in `keep`."""
        if self.bars:
            gone, kept = set(symbols), set(keep)
            self.bars = {k: b for k, b in self.bars.items() if k[0] not in gone or k[1] in kept} or None

    def put(self, tick: EncodedTick) -> bool:
        """Queue a tick in order (throttle 0). False if dropped as old.

        Normally the next seq; after a gap (ticks merged in a throttle bucket before the
        subscription moved to throttle 0) it carries `conflated` for what it skips.
        """
        symbol = tick.symbol
        last = self.last_seq.get(symbol, 0)
        seq = tick.seq
        if seq <= last:
            return False
        self.last_seq[symbol] = seq
        if seq - last > 1 and last:
            skipped = seq - last - 1 - self.losses.between(symbol, last, seq)
            self.conflated += skipped
            tick = tick.with_conflated(skipped)
        ticks = self.ticks
        if self.latest and tick.symbol in self.latest:
            ticks.append(self.latest.pop(tick.symbol))  # keep the older tick first
        ticks.append(tick)
        if len(ticks) > self.max_ticks:
            self.conflate()
        return True

    def put_latest(self, tick: EncodedTick) -> bool:
        """Queue a tick, replacing a pending one of its symbol. False if dropped as old.

        The tick carries `conflated`: the ticks since the connection's previous one
        that it stands in for (minus those lost before the hub).
        """
        symbol = tick.symbol
        last = self.last_seq.get(symbol, 0)
        if tick.seq <= last:
            return False
        self.last_seq[symbol] = tick.seq
        prev = self.latest.get(symbol)
        if prev is not None:  # replaced before it was sent: this one stands in for it too
            n = prev.conflated + tick.seq - prev.seq - self.losses.between(symbol, prev.seq, tick.seq)
            self.conflated += n - prev.conflated
        elif last:
            n = tick.seq - last - 1 - self.losses.between(symbol, last, tick.seq)
            self.conflated += n
        else:  # the first tick of the symbol on this connection: nothing to account for
            n = 0
        self.latest[symbol] = tick.with_conflated(n)
        return True

    def conflate(self) -> None:
        """Keep only the latest pending tick of each symbol, counting what it stands in for."""
        newest: dict[str, EncodedTick] = {}
        dropped: dict[str, int] = {}
        for tick in self.ticks:
            prev = newest.get(tick.symbol)
            if prev is not None:
                dropped[tick.symbol] = dropped.get(tick.symbol, 0) + 1 + prev.conflated
            newest[tick.symbol] = tick
        latest = self.latest
        kept = 0  # ticks of `self.ticks` that stay pending (in `latest`)
        for symbol, tick in newest.items():
            held = latest.get(symbol)
            if held is None:
                kept += 1
                latest[symbol] = tick.with_conflated(tick.conflated + dropped.get(symbol, 0))
            else:  # the tick already in `latest` is newer: it stands in for all of these
                latest[symbol] = held.with_conflated(held.conflated + dropped.get(symbol, 0) + 1 + tick.conflated)
        self.conflated += len(self.ticks) - kept
        self.ticks = []
        self.conflations += 1

    def add_control(self, frame: bytes) -> None:
        self.controls.append(frame)

    def put_back(self, frame: bytes) -> None:
        """Put a frame taken out but not sent back, first in line (it leaves before
        everything still pending, as it would have)."""
        self.controls.insert(0, frame)

    def take_control(self) -> bytes:
        """Remove and return the oldest control frame."""
        return self.controls.pop(0)

    def accept_snapshot(self, ticks: Iterable[EncodedTick]) -> list[EncodedTick]:
        """Merge snapshot ticks with the pending ones; return the snapshot to send.

        For each symbol the newest of its stored snapshot and its pending live ticks
        becomes its snapshot entry, and its pending ticks are removed; a stored snapshot
        not newer than what the connection already has is left out. So seq keeps
        increasing across the snapshot frame and the ticks that follow it.
        """
        snap = {t.symbol: t.base for t in ticks}
        pending: set[str] = set()
        if self.ticks:
            keep = []
            for tick in self.ticks:
                if tick.symbol in snap:
                    pending.add(tick.symbol)
                    if tick.seq > snap[tick.symbol].seq:
                        snap[tick.symbol] = tick.base
                else:
                    keep.append(tick)
            self.ticks = keep
        for symbol in [s for s in self.latest if s in snap]:
            tick = self.latest.pop(symbol)
            pending.add(symbol)
            if tick.seq > snap[symbol].seq:
                snap[symbol] = tick.base
        accepted = []
        for symbol, tick in snap.items():
            last = self.last_seq.get(symbol, 0)
            if tick.seq > last or (symbol in pending and tick.seq == last):
                accepted.append(tick)
                self.last_seq[symbol] = tick.seq
        return accepted

    def accept_recovery(self, symbol: str, since: int, ticks: list[EncodedTick]) -> list[EncodedTick]:
        """Merge a symbol's recovered ticks (every tick after `since`, in seq order) with its
        pending live ones; return the ticks to send, in seq order, and remove the pending
        ones. Live ticks already in `ticks` are dropped; later ones follow them. The seq
        filter starts from what the client holds (`since`)."""
        upto = ticks[-1].seq if ticks else since
        live = [t for t in self.ticks if t.symbol == symbol]
        if live:
            self.ticks = [t for t in self.ticks if t.symbol != symbol]
        held = self.latest.pop(symbol, None)
        if held is not None:
            live.append(held)
        merged = [*ticks, *(t.base for t in live if t.seq > upto)]
        self.last_seq[symbol] = merged[-1].seq if merged else since
        return merged

    def discard(self, symbols: Iterable[str]) -> None:
        """Remove every pending tick and bar of `symbols` (unsubscribe). Their seq is kept."""
        gone = set(symbols)
        if not gone:
            return
        self.ticks = [t for t in self.ticks if t.symbol not in gone]
        for symbol in gone:
            self.latest.pop(symbol, None)
        self.discard_bars(gone)

    def first_tick(self) -> EncodedTick | None:
        """The tick `take_ticks` would return first (the oldest pending), or None."""
        if self.ticks:
            return self.ticks[0]
        return next(iter(self.latest.values()), None)

    def take_ticks(self, max_bytes: int = 0, binary: bool = True) -> list[EncodedTick]:
        """Remove and return the pending ticks, in an order that keeps seq increasing.

        With `max_bytes`, take only as many as keep their encodings (msgpack with
        `binary`, else JSON) within `max_bytes` (at least one): the rest stays pending,
        first in line, so one frame never grows past that size.
        """
        ticks = self.ticks
        if self.latest:
            ticks.extend(self.latest.values())
            self.latest = {}
        self.ticks = []
        if max_bytes and len(ticks) > CHECK_SIZE_FROM:
            size = 0
            for i, tick in enumerate(ticks):
                size += len(tick.msgpack if binary else tick.json)
                if size > max_bytes and i:
                    self.ticks = ticks[i:]  # newer than anything still in `latest`: none is
                    return ticks[:i]
        return ticks
