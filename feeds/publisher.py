"""The publisher: stamps, encodes and publishes ticks. The only encoder of ticks.

For each quote: stamp `ts`, encode the tick once (both codecs) as a draft without its
seq, and hand the batch to the tick transport, whose store (the seq authority) gives
each tick its symbol's next seq, keeps it and sends it, as one step. Seq lives in the
store, so it survives restarts of the feed and is shared by every publisher of a symbol.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from feeds.simulated import Quote, TimedQuote
from marketstream.core.store import Store
from marketstream.core.tick import Draft, EncodedTick, now_ns
from marketstream.core.transport import TickTransport

log = logging.getLogger(__name__)


class Publisher:
    """Publishes quotes as ticks through `transport`; registers symbols in `store`."""

    def __init__(self, store: Store, transport: TickTransport) -> None:
        self.store = store
        self.transport = transport

    async def prepare(self, symbols: Sequence[str]) -> None:
        """Register `symbols` in the catalog."""
        await self.store.register(symbols)

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
        drafts = self.stamp(quotes)
        return await self.transport.publish(drafts) if drafts else []
