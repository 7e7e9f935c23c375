"""The store interface: the seq authority, snapshots, history and the catalog; and the
in-memory store of the embedded default.

The Redis store is an adapter at the edge (`marketstream.adapters.redis_store`). Both
keep, per symbol: its seq and epoch (assigned by `append`, one authority for every
publisher of the symbol), its snapshot (last tick) and its history (the last
`history_length` ticks, for recovery). The tick transport stores a tick before it sends
it, so a hub that starts receiving a symbol first and reads the store second never
misses a tick (PROTOCOL.md: snapshot and live stream meet without races).
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from marketstream.core.bars import DEFAULT_KEEP, Bar, BarBook, BarUpdate
from marketstream.core.symbols import SymbolInfo
from marketstream.core.tick import Draft, EncodedTick

MAX_HISTORY_READ = 10_000  # ticks one history read returns at most (PROTOCOL.md: `limit`)


@dataclass(frozen=True, slots=True)
class History:
    """A stretch of a symbol's history, with what it is measured against.

    `epoch` and `last_seq` are the symbol's current ones ("" and 0 before its first tick);
    `first_seq` is the oldest seq history still holds (0 when it holds none).
    """

    epoch: str = ""
    first_seq: int = 0
    last_seq: int = 0
    ticks: list[EncodedTick] = field(default_factory=list)


def new_epoch() -> str:
    """A fresh epoch: short, and never the same twice in practice."""
    return uuid.uuid4().hex[:8]


class Store(Protocol):
    async def register(self, symbols: Iterable[str]) -> None:
        """Add symbols to the catalog."""

    async def known(self, symbols: Sequence[str]) -> list[bool]:
        """For each symbol, whether it is in the catalog."""

    async def describe(self, infos: Mapping[str, SymbolInfo]) -> None:
        """Keep what a publisher says about these symbols (name, kind, reference price),
        replacing what was said before."""

    async def descriptions(self) -> dict[str, SymbolInfo]:
        """What was said about the symbols described so far."""

    async def append(self, drafts: Sequence[Draft]) -> list[EncodedTick]:
        """Assign each draft its symbol's next seq (a new epoch when the symbol's seq was
        lost), keep the ticks as snapshots and in history, and count them in their
        symbols' bars, as one atomic step."""

    async def snapshots(self, symbols: Sequence[str]) -> dict[str, EncodedTick]:
        """The last tick of each of `symbols` that has one, with its epoch."""

    async def history(self, symbol: str, after_seq: int | None, limit: int) -> History:
        """The first `limit` ticks after `after_seq`, or with None the last `limit` ticks."""

    async def tails(self, after: Mapping[str, int], limit: int) -> dict[str, History]:
        """For each symbol of `after`, the last `limit` of its ticks after the seq given for
        it, oldest first (one round trip for all): what recovering clients missed, read
        no further back than the one that holds the least."""

    async def bars(self, symbol: str, interval: str, limit: int) -> list[Bar]:
        """The last `limit` bars of `symbol` and `interval`, oldest first: the final ones
        kept, then the open one (if any)."""

    async def open_bars(self, symbols: Sequence[str]) -> dict[str, list[Bar]]:
        """The newest bar of each interval of each of `symbols` that has one."""

    async def finalize_bars(self, symbols: Sequence[str], now_ns: int) -> int:
        """Make final (keep and send) every open bar of `symbols` whose interval ended by
        `now_ns`, each once however many publishers ask. Returns how many."""

    async def catalog(self) -> dict[str, EncodedTick | None]:
        """Every symbol of the catalog with its last tick (None before the first)."""

    async def ping(self) -> None:
        """Raise when the store does not work."""


class MemoryStore:
    """The embedded default: one process, no Redis. Also the store of unit tests.

    `append_with_bars` and `finalize` also return the bar updates to send: the in-memory
    transport sends them (on Redis, the scripts publish them themselves)."""

    def __init__(self, history_length: int = 2000, bars_keep: int = DEFAULT_KEEP) -> None:
        self.history_length = history_length
        self.symbols: set[str] = set()
        self.infos: dict[str, SymbolInfo] = {}
        self.last: dict[str, EncodedTick] = {}
        self.epochs: dict[str, str] = {}
        self.ticks: dict[str, collections.deque[EncodedTick]] = {}
        self.book = BarBook(bars_keep)

    async def register(self, symbols: Iterable[str]) -> None:
        self.symbols.update(symbols)

    async def known(self, symbols: Sequence[str]) -> list[bool]:
        return [s in self.symbols for s in symbols]

    async def describe(self, infos: Mapping[str, SymbolInfo]) -> None:
        self.infos.update(infos)

    async def descriptions(self) -> dict[str, SymbolInfo]:
        return dict(self.infos)

    async def append(self, drafts: Sequence[Draft]) -> list[EncodedTick]:
        return self.append_with_bars(drafts)[0]

    def append_with_bars(self, drafts: Sequence[Draft]) -> tuple[list[EncodedTick], list[BarUpdate]]:
        """`append`, and the bars it changed: one update per symbol."""
        changed: dict[str, dict[tuple[str, int], Bar]] = {}
        book = self.book
        for draft in drafts:
            if draft.price is not None:
                book.update(draft.symbol, draft.ts, draft.price, draft.size, changed.setdefault(draft.symbol, {}))
        ticks = self._append(drafts)
        updates = [BarUpdate(s, [b.copy() for b in bars.values()]) for s, bars in changed.items() if bars]
        return ticks, updates

    def finalize(self, symbols: Sequence[str], now_ns: int) -> list[BarUpdate]:
        """`finalize_bars`, returning the updates to send."""
        return self.book.finalize(symbols, now_ns)

    async def finalize_bars(self, symbols: Sequence[str], now_ns: int) -> int:
        return sum(len(u.bars) for u in self.finalize(symbols, now_ns))

    async def bars(self, symbol: str, interval: str, limit: int) -> list[Bar]:
        return self.book.recent(symbol, interval, limit)

    async def open_bars(self, symbols: Sequence[str]) -> dict[str, list[Bar]]:
        found = {s: self.book.open_bars(s) for s in symbols}
        return {s: bars for s, bars in found.items() if bars}

    def _append(self, drafts: Sequence[Draft]) -> list[EncodedTick]:
        out = []
        for draft in drafts:
            symbol = draft.symbol
            last = self.last.get(symbol)
            if last is None:
                self.epochs[symbol] = new_epoch()
                self.ticks[symbol] = collections.deque(maxlen=self.history_length)
            tick = draft.complete(last.seq + 1 if last is not None else 1, self.epochs[symbol])
            self.symbols.add(symbol)
            self.last[symbol] = tick
            if self.history_length:
                self.ticks[symbol].append(tick)
            out.append(tick)
        return out

    def forget(self, symbol: str) -> None:
        """Lose everything about `symbol` except its place in the catalog (as a Redis that
        lost its data would): its next tick starts a new epoch."""
        self.last.pop(symbol, None)
        self.epochs.pop(symbol, None)
        self.ticks.pop(symbol, None)
        self.book.forget(symbol)

    async def snapshots(self, symbols: Sequence[str]) -> dict[str, EncodedTick]:
        return {s: self.last[s] for s in symbols if s in self.last}

    async def history(self, symbol: str, after_seq: int | None, limit: int) -> History:
        kept = list(self.ticks.get(symbol, ()))
        if after_seq is None:
            chosen = kept[-limit:] if limit > 0 else []
        else:
            chosen = [t for t in kept if t.seq > after_seq][:limit]
        last = self.last.get(symbol)
        return History(self.epochs.get(symbol, ""), kept[0].seq if kept else 0, last.seq if last else 0, chosen)

    async def tails(self, after: Mapping[str, int], limit: int) -> dict[str, History]:
        found = {}
        for symbol, seq in after.items():
            history = await self.history(symbol, None, limit)
            found[symbol] = History(
                history.epoch, history.first_seq, history.last_seq, [t for t in history.ticks if t.seq > seq]
            )
        return found

    async def catalog(self) -> dict[str, EncodedTick | None]:
        return {s: self.last.get(s) for s in sorted(self.symbols)}

    async def ping(self) -> None:
        return None
