"""The publisher: stamps, encodes and publishes ticks. The only encoder of ticks.

For each quote: stamp `ts`, encode the tick once (both codecs) as a draft without its
seq, and hand the batch to the tick transport, whose store (the seq authority) gives
each tick its symbol's next seq, keeps it, counts it in its bars and sends it, as one
step. Seq and bars live in the store, so they survive restarts of the feed and are shared
by every publisher of a symbol.

The publisher also ends bars on time (`finalize_bars`, called by the feed's timer every
second): never while one of its own batches is in flight, so that none of its ticks
stamped before a bar's end arrives after the bar was made final.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from feeds.simulated import Quote, TimedQuote
from marketstream.core.store import Store
from marketstream.core.symbols import SymbolInfo
from marketstream.core.tick import Draft, EncodedTick, now_ns
from marketstream.core.transport import TickTransport

log = logging.getLogger(__name__)


class Publisher:
    """Publishes quotes as ticks through `transport`; registers symbols in `store`."""

    def __init__(self, store: Store, transport: TickTransport) -> None:
        self.store = store
        self.transport = transport
        self._lock = asyncio.Lock()  # a batch, or a finalization, at a time

    async def prepare(self, symbols: Sequence[str], infos: Mapping[str, SymbolInfo] | None = None) -> None:
        """Register `symbols` in the catalog, with what `infos` says of them (name, kind,
        reference price)."""
        await self.store.register(symbols)
        if infos:
            await self.store.describe(infos)

    def stamp(self, quotes: Sequence[Quote | TimedQuote]) -> list[Draft]:
        """Quotes as drafts stamped with `ts`, each encoded once. A quote that carries
        its source's own time keeps it as `src_ts` (PROTOCOL.md)."""
        ts = now_ns()
        drafts = []
        for quote in quotes:
            symbol, price, size, bid, ask = quote[:5]
            fields: dict[str, object] = {
                "symbol": symbol,
                "ts": ts,
                "price": price,
                "size": size,
                "bid": bid,
                "ask": ask,
            }
            if len(quote) > 5:
                fields["src_ts"] = int(quote[5])
            drafts.append(Draft.encode(fields))
        return drafts

    async def publish(self, quotes: Sequence[Quote | TimedQuote]) -> list[EncodedTick]:
        """Publish a batch of quotes as ticks; returns them with their seq and epoch."""
        async with self._lock:
            drafts = self.stamp(quotes)
            return await self.transport.publish(drafts) if drafts else []

    async def finalize_bars(self, symbols: Sequence[str]) -> int:
        """Make final the bars of `symbols` whose interval has ended (now, by this
        publisher's clock, the one that stamps `ts`). Returns how many were."""
        async with self._lock:
            return await self.transport.finalize_bars(symbols, now_ns())
