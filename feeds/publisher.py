"""The publisher: stamps, sequences and publishes ticks. The only encoder of ticks.

For each quote: stamp `ts`, assign the symbol's next `seq`, encode the tick once (both
codecs), and hand the batch to the tick transport, which saves the snapshots and sends
the ticks as one step. Seq continues from the stored snapshot, so it survives restarts
of the feed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from feeds.simulated import Quote
from marketstream.core.store import Store
from marketstream.core.tick import EncodedTick, Tick, now_ns
from marketstream.core.transport import TickTransport

log = logging.getLogger(__name__)


class Publisher:
    """Publishes quotes as ticks through `transport`; reads seq from `store` at `prepare`."""

    def __init__(self, store: Store, transport: TickTransport) -> None:
        self.store = store
        self.transport = transport
        self.seq: dict[str, int] = {}

    async def prepare(self, symbols: Sequence[str]) -> None:
        """Register `symbols` in the catalog and continue their seq from the snapshots."""
        await self.store.register(symbols)
        snapshots = await self.store.snapshots(list(symbols))
        for symbol in symbols:
            self.seq[symbol] = snapshots[symbol].seq if symbol in snapshots else 0

    def stamp(self, quotes: Sequence[Quote]) -> list[EncodedTick]:
        """Quotes as ticks with `ts` and the next seq of their symbol, encoded once."""
        ts = now_ns()
        ticks = []
        for symbol, price, size, bid, ask in quotes:
            seq = self.seq.get(symbol, 0) + 1
            self.seq[symbol] = seq
            tick: Tick = {"symbol": symbol, "seq": seq, "ts": ts, "price": price, "size": size, "bid": bid, "ask": ask}
            ticks.append(EncodedTick.encode(tick))
        return ticks

    async def publish(self, quotes: Sequence[Quote]) -> list[EncodedTick]:
        """Publish a batch of quotes as ticks; returns them."""
        ticks = self.stamp(quotes)
        if ticks:
            await self.transport.publish(ticks)
        return ticks
