"""Fakes shared by the unit tests of the core: a clock, a tick transport, a peer. No I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgpack

from marketstream.core.bars import BarUpdate
from marketstream.core.closes import Close
from marketstream.core.store import MemoryStore
from marketstream.core.tick import Draft, EncodedTick


class Clock:
    """A monotonic clock that moves only when a test moves it."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def draft(symbol: str, price: float = 1.0) -> Draft:
    """A real draft, as the publisher makes it (every field but seq)."""
    return Draft.encode(
        {"symbol": symbol, "ts": 1_700_000_000_000_000_000, "price": price, "size": 1.0, "bid": 0.9, "ask": 1.1}
    )


def tick(symbol: str, seq: int, price: float = 1.0, epoch: str = "") -> EncodedTick:
    """A real encoded tick (frames built from it decode), made as the seq authority makes it."""
    return draft(symbol, price).complete(seq, epoch)


async def settle(turns: int = 10) -> None:
    """Let the loop run the tasks that are ready (writers, flushes, leaves)."""
    for _ in range(turns):
        await asyncio.sleep(0)


class FakeTransport:
    """A TickTransport in memory.

    `receive` returns what `push` put in (raising it when it is an exception); joins,
    leaves and publishes are recorded. `publish` has `store` (a MemoryStore: the seq
    authority, its own one when none is given) complete the drafts, and records the
    ticks; it does not deliver them (tests hand ticks to a hub themselves). `fail_join`
    makes `join` of those symbols raise, `on_join` runs inside `join` before it returns
    (to make ticks arrive meanwhile).
    """

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self.opened = 0
        self.fail_open: Exception | None = None
        self.joined: set[str] = set()
        self.joins: list[str] = []
        self.leaves: list[str] = []
        self.published: list[list[EncodedTick]] = []
        self.fail_join: set[str] = set()
        self.on_join: Callable[[str], Awaitable[None]] | None = None
        self.inbox: asyncio.Queue[EncodedTick | BarUpdate | Exception] = asyncio.Queue()
        self.bars_joined: set[str] = set()
        self.fail_join_bars: set[str] = set()
        self.bar_updates: list[BarUpdate] = []  # what publish and finalize_bars sent

    def push(self, item: EncodedTick | BarUpdate | Exception) -> None:
        self.inbox.put_nowait(item)

    async def open(self) -> None:
        if self.fail_open is not None:
            raise self.fail_open
        self.opened += 1

    async def receive(self) -> EncodedTick | BarUpdate:
        item = await self.inbox.get()
        if isinstance(item, Exception):
            raise item
        return item

    async def join(self, symbol: str) -> None:
        if self.on_join is not None:
            await self.on_join(symbol)
        if symbol in self.fail_join:
            raise ConnectionError(f"cannot join {symbol}")
        self.joins.append(symbol)
        self.joined.add(symbol)

    async def leave(self, symbol: str) -> None:
        self.leaves.append(symbol)
        self.joined.discard(symbol)

    async def join_bars(self, symbol: str) -> None:
        if symbol in self.fail_join or symbol in self.fail_join_bars:
            raise ConnectionError(f"cannot join the bars of {symbol}")
        self.bars_joined.add(symbol)

    async def leave_bars(self, symbol: str) -> None:
        self.bars_joined.discard(symbol)

    async def publish(self, drafts: Sequence[Draft]) -> list[EncodedTick]:
        ticks, updates = self.store.append_with_bars(drafts)
        self.published.append(ticks)
        self.bar_updates.extend(updates)
        return ticks

    async def finalize_bars(self, symbols: Sequence[str], now_ns: int) -> int:
        updates = self.store.finalize(symbols, now_ns)
        self.bar_updates.extend(updates)
        return sum(len(u.bars) for u in updates)


class Peer:
    """The edge of one connection: records the frames sent (decoded) and the closes."""

    def __init__(self, writable: bool = True) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closes: list[tuple[Close, str]] = []
        self.is_writable = writable

    async def send(self, frame: bytes) -> None:
        self.frames.append(msgpack.unpackb(frame))

    def closer(self, code: Close, reason: str) -> None:
        self.closes.append((code, reason))

    def writable(self) -> bool:
        return self.is_writable

    def types(self) -> list[str]:
        return [f["type"] for f in self.frames]

    def take(self) -> list[dict[str, Any]]:
        """The frames sent since the last call."""
        frames, self.frames = self.frames, []
        return frames

    def ticks(self) -> list[tuple[str, int]]:
        """(symbol, seq) of every tick in the `ticks` frames sent since the last call."""
        return [(t["symbol"], t["seq"]) for f in self.take() if f["type"] == "ticks" for t in f["ticks"]]
