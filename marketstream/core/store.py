"""The store interface: where snapshots, seq and the catalog live; and the in-memory store.

The Redis store is an adapter at the edge (`marketstream.adapters.redis_store`); the
embedded default uses `MemoryStore`. A tick transport saves a tick's snapshot before it
sends the tick, so a hub that starts receiving a symbol first and reads its snapshot
second never misses a tick (PROTOCOL.md: snapshot and live stream meet without races).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from marketstream.core.tick import EncodedTick


class Store(Protocol):
    async def register(self, symbols: Iterable[str]) -> None:
        """Add symbols to the catalog."""

    async def known(self, symbols: Sequence[str]) -> list[bool]:
        """For each symbol, whether it is in the catalog."""

    async def save(self, ticks: Sequence[EncodedTick]) -> None:
        """Store ticks as their symbols' snapshots (and keep the symbols in the catalog)."""

    async def snapshots(self, symbols: Sequence[str]) -> dict[str, EncodedTick]:
        """The last tick of each of `symbols` that has one."""

    async def catalog(self) -> dict[str, EncodedTick | None]:
        """Every symbol of the catalog with its last tick (None before the first)."""

    async def ping(self) -> None:
        """Raise when the store does not work."""


class MemoryStore:
    """The embedded default: one process, no Redis. Also the store of unit tests."""

    def __init__(self) -> None:
        self.symbols: set[str] = set()
        self.last: dict[str, EncodedTick] = {}

    async def register(self, symbols: Iterable[str]) -> None:
        self.symbols.update(symbols)

    async def known(self, symbols: Sequence[str]) -> list[bool]:
        return [s in self.symbols for s in symbols]

    async def save(self, ticks: Sequence[EncodedTick]) -> None:
        for tick in ticks:
            self.symbols.add(tick.symbol)
            self.last[tick.symbol] = tick

    async def snapshots(self, symbols: Sequence[str]) -> dict[str, EncodedTick]:
        return {s: self.last[s] for s in symbols if s in self.last}

    async def catalog(self) -> dict[str, EncodedTick | None]:
        return {s: self.last.get(s) for s in sorted(self.symbols)}

    async def ping(self) -> None:
        return None
