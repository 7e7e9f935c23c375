"""The symbols the cluster's feed publishes, spread over the shards by the project's own rule."""

from __future__ import annotations

import importlib.util

RATE = 80.0  # ticks/s over all symbols: 10 per symbol per second
PER_SHARD = 4
CANDIDATES = [
    "AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "TSLA", "META", "AMD", "INTC", "IBM", "ORCL", "NFLX",
    "EUR/USD", "USD/JPY", "GBP/USD", "AUD/USD", "BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD",
]  # fmt: skip


def sharded() -> bool:
    """True once REDIS_URL takes several shards (marketstream.adapters.shards exists)."""
    return importlib.util.find_spec("marketstream.adapters.shards") is not None


def shard_count() -> int:
    """Shards of the clusters of the tests that are not about shards: two where the tree has sharding."""
    return 2 if sharded() else 1


def shard_of(symbol: str, shards: int) -> int:
    """The shard of `symbol` (the project's rule, `marketstream.adapters.shards.shard_of`)."""
    if shards == 1:
        return 0
    from marketstream.adapters.shards import shard_of as rule

    return int(rule(symbol, shards))


def cluster_symbols(shards: int | None = None, per_shard: int = PER_SHARD) -> list[str]:
    """`per_shard` symbols of each shard (in CANDIDATES' order), shard 0's first."""
    n = shard_count() if shards is None else shards
    chosen: dict[int, list[str]] = {i: [] for i in range(n)}
    for symbol in CANDIDATES:
        bucket = chosen[shard_of(symbol, n)]
        if len(bucket) < per_shard:
            bucket.append(symbol)
    if any(len(b) < per_shard for b in chosen.values()):
        raise AssertionError(f"too few candidate symbols for {per_shard} per shard over {n} shards: {chosen}")
    return [s for i in range(n) for s in chosen[i]]
