"""The publisher: stamps, encodes and publishes ticks. The only encoder of ticks.

For each quote: stamp `ts`, encode the tick once (both codecs) as a draft without its
seq, and hand the batch to the tick transport, whose store (the seq authority) gives
each tick its symbol's next seq, keeps it, counts it in its bars and sends it, as one
step. Seq and bars live in the store, so they survive restarts of the feed and are shared
by every publisher of a symbol.

The publisher also ends bars on time (`finalize_bars`, called by the feed's timer every
second): never while one of its own batches is in flight, so that none of its ticks
stamped before a bar's end arrives after the bar was made final (a batch that waited for
the lock across a whole second is stamped again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from feeds.simulated import Quote, TimedQuote
from marketstream.core.bars import NS
from marketstream.core.stats import PublishStats
from marketstream.core.store import Store
from marketstream.core.symbols import SymbolInfo
from marketstream.core.tick import Draft, EncodedTick, now_ns
from marketstream.core.transport import TickTransport, Unavailable

log = logging.getLogger(__name__)


class Publisher:
    """Publishes quotes as ticks through `transport`; registers symbols in `store`."""

    def __init__(self, store: Store, transport: TickTransport) -> None:
        self.store = store
        self.transport = transport
        self._lock = asyncio.Lock()  # a batch, or a finalization, at a time
        self._last_ts = 0  # the ts of the last batch published
        self.stats = PublishStats()  # ticks published, publish round trips (the feed's metrics)

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
        """Publish a batch of quotes as ticks; returns them with their seq and epoch.

        The batch is encoded before the lock is taken, so that one batch is encoded while
        the previous one is in the store; it is stamped again inside the lock if a whole
        second began meanwhile (a bar may have been made final since: its ticks must all
        be in first) or a batch stamped later went out first (so that, with a clock that
        does not go back, ts never goes back in one publisher's order).
        """
        if not quotes:
            return []
        drafts = self.stamp(quotes)
        async with self._lock:
            stamped = drafts[0].ts
            if stamped < self._last_ts or stamped // NS != now_ns() // NS:
                drafts = self.stamp(quotes)
            self._last_ts = drafts[0].ts
            started = time.perf_counter()
            try:
                published = await self.transport.publish(drafts)
            except Unavailable as exc:  # some shard is down: what went out still counts
                self.stats.published(len(exc.ticks), time.perf_counter() - started)
                raise
            self.stats.published(len(published), time.perf_counter() - started)
            return published

    async def finalize_bars(self, symbols: Sequence[str]) -> int:
        """Make final the bars of `symbols` whose interval has ended (now, by this
        publisher's clock, the one that stamps `ts`). Returns how many were."""
        async with self._lock:
            return await self.transport.finalize_bars(symbols, now_ns())
