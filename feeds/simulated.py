"""A simulated feed: a geometric random walk per instrument, with bid < ask and sizes.

Reproducible: the same seed and instruments give the same sequence of quotes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from feeds.universe import Instrument
from marketstream.core.symbols import SymbolInfo

Quote = tuple[str, float, float, float, float]  # symbol, price, size, bid, ask
# a quote from a source with a clock of its own (replay, ingest): ... and the source's time, int ns
TimedQuote = tuple[str, float, float, float, float, int]

_TRADING_SECONDS = 6.5 * 3600


class SimulatedFeed:
    """Yields quotes for randomly chosen instruments of the set, one per call."""

    def __init__(self, instruments: Sequence[Instrument], seed: int | None = None) -> None:
        if not instruments:
            raise ValueError("a simulated feed needs at least one instrument")
        self.instruments = list(instruments)
        self.random = random.Random(seed)
        self.mid = [i.price for i in self.instruments]

    def infos(self) -> dict[str, SymbolInfo]:
        """What the catalog says of each instrument: name, kind and reference price."""
        return {i.symbol: i.info() for i in self.instruments}

    def _decimals(self, increment: float) -> int:
        return max(0, -math.floor(math.log10(increment) + 1e-9))

    def next(self) -> Quote:
        """A quote for a randomly chosen instrument, one step on from its last."""
        return self.quote(self.random.randrange(len(self.instruments)))

    def opening(self) -> list[Quote]:
        """One quote for every instrument, so each has a snapshot from the start."""
        return [self.quote(k) for k in range(len(self.instruments))]

    def quote(self, k: int) -> Quote:
        """One step of instrument `k`'s walk."""
        rnd = self.random
        inst = self.instruments[k]
        # one step of about a thousandth of a trading day's volatility
        sigma = inst.volatility * math.sqrt(1 / 1000)
        mid = max(inst.increment * 10, self.mid[k] * math.exp(rnd.gauss(0.0, sigma)))
        self.mid[k] = mid
        decimals = self._decimals(inst.increment)
        half = max(1, round(inst.spread * rnd.uniform(0.5, 1.5))) * inst.increment / 2
        bid = round(mid - half, decimals)
        ask = round(mid + half, decimals)
        if ask <= bid:
            ask = round(bid + inst.increment, decimals)
        price = round(rnd.choice((bid, ask, (bid + ask) / 2)), decimals)
        size = float(max(1, round(inst.lot * rnd.lognormvariate(0.0, 0.8))))
        return (inst.symbol, price, size, bid, ask)

    def batch(self, n: int) -> list[Quote]:
        return [self.next() for _ in range(n)]
