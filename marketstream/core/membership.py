"""Which symbols this process receives from the tick transport: joins and leaves.

A symbol is joined while at least one local connection is routed to it, so a tick
crosses the transport once per process, however many local subscribers it has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from marketstream.core.transport import TickTransport

log = logging.getLogger(__name__)


class Joins(Protocol):
    """What a membership joins and leaves: a symbol's ticks (a `TickTransport`), or its bars."""

    async def join(self, symbol: str) -> None: ...

    async def leave(self, symbol: str) -> None: ...


class BarGroups:
    """The bars of symbols on a tick transport, as `Joins`."""

    def __init__(self, transport: TickTransport) -> None:
        self.transport = transport

    async def join(self, symbol: str) -> None:
        await self.transport.join_bars(symbol)

    async def leave(self, symbol: str) -> None:
        await self.transport.leave_bars(symbol)


class Membership:
    """Joins and leaves of symbols, one at a time per symbol (a lock each)."""

    def __init__(
        self, transport: Joins, routed: Callable[[str], bool], left: Callable[[str], None] | None = None
    ) -> None:
        self.transport = transport
        self.routed = routed  # whether a local connection still wants the symbol
        self.left = left  # told after the transport left a symbol
        self.joined: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._leaving: set[asyncio.Task[None]] = set()

    async def join(self, symbols: Iterable[str]) -> None:
        """Make sure this process receives the ticks of `symbols` that are still routed."""
        for symbol in symbols:
            if symbol in self.joined:
                continue
            async with self._lock(symbol):
                if symbol not in self.joined and self.routed(symbol):
                    await self.transport.join(symbol)
                    self.joined.add(symbol)

    def leave_soon(self, symbol: str) -> None:
        """Leave `symbol` in a task of its own, unless it is routed again by then."""
        task = asyncio.get_running_loop().create_task(self._leave(symbol))
        self._leaving.add(task)  # keep a reference until it is done
        task.add_done_callback(self._leaving.discard)

    def stop(self) -> None:
        for task in self._leaving:
            task.cancel()

    async def _leave(self, symbol: str) -> None:
        async with self._lock(symbol):
            if symbol in self.joined and not self.routed(symbol):
                self.joined.discard(symbol)
                try:
                    await self.transport.leave(symbol)
                except Exception:
                    log.exception("hub: leaving %s failed", symbol)
                if self.left is not None:
                    self.left(symbol)

    def _lock(self, symbol: str) -> asyncio.Lock:
        lock = self._locks.get(symbol)
        if lock is None:
            lock = self._locks[symbol] = asyncio.Lock()
        return lock
