"""The tick-transport interface: how ticks travel from publishers to every hub.

The adapter over the Channels layer (`marketstream.adapters.transport`) implements it
at the edge; the core only sees this protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from marketstream.core.bars import BarUpdate
from marketstream.core.tick import Draft, EncodedTick


class MalformedMessage(ValueError):
    """A transport message that is not a tick: the hub counts it and goes on."""


class Unavailable(ConnectionError):
    """`publish` could not publish the ticks of some symbols: their shard is down. `ticks`
    are those it published (in the drafts' order), `symbols` those whose drafts it did not."""

    def __init__(self, ticks: list[EncodedTick], symbols: set[str], reason: str) -> None:
        super().__init__(reason)
        self.ticks = ticks
        self.symbols = symbols


class TickTransport(Protocol):
    async def open(self) -> None:
        """Get ready to receive (a hub's address on the transport). Idempotent; raises
        when the transport cannot be reached."""

    async def receive(self) -> EncodedTick | BarUpdate:
        """The next tick of a joined symbol, or bar update of a symbol whose bars are
        joined, in the order the transport delivers them.

        Raises MalformedMessage for a message that is not a tick; any other exception
        means the transport failed (the caller retries later).
        """

    async def join(self, symbol: str) -> None:
        """Receive the ticks of `symbol` from now on (after this returns, none is missed)."""

    async def leave(self, symbol: str) -> None:
        """Stop receiving the ticks of `symbol`."""

    async def join_bars(self, symbol: str) -> None:
        """Receive the bar updates of `symbol` from now on."""

    async def leave_bars(self, symbol: str) -> None:
        """Stop receiving the bar updates of `symbol`."""

    async def publish(self, drafts: Sequence[Draft]) -> list[EncodedTick]:
        """Have the store assign the drafts their seq and keep them (`Store.append`), and
        send the ticks to every hub that joined their symbols, in seq order, then the
        bars they changed. A tick is kept before it is sent, so a hub that joins and then
        reads the store misses none. Returns the ticks. Raises `Unavailable` when the
        ticks of some symbols could not be published (the others were)."""

    async def finalize_bars(self, symbols: Sequence[str], now_ns: int) -> int:
        """Have the store make final the bars of `symbols` whose interval ended by
        `now_ns` (`Store.finalize_bars`) and send them. Returns how many."""
