"""Fixtures of the integration tests: the real Redis, and a hub and feed shared by a module.

`prefix`, `procs` and `redis_url` come from tests.support.fixtures. Every process a fixture
starts is stopped in its teardown (in a `finally`), and every Redis key under a test's prefix
is deleted after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from loadtest.services import Hub, Service, delete_prefix
from tests.support.processes import Processes, unique_prefix

SHARED_SYMBOLS = ["AAPL", "MSFT", "EUR/USD", "BTC/USD", "NVDA", "TSLA"]
SHARED_RATE = 200  # ticks/s over the shared symbols: about 33 per symbol per second


@pytest.fixture(scope="session", autouse=True)
def _redis_required(redis_url: str) -> None:
    """Every integration test needs the project's Redis: fail at once, saying how to start it."""


@dataclass
class Shared:
    """A hub and a feed running for a whole test module."""

    prefix: str
    hub: Hub
    feed: Service
    procs: Processes
    symbols: list[str]


@pytest.fixture(scope="module")
def shared(redis_url: str) -> Iterator[Shared]:
    """One hub (default limits) and one feed of SHARED_SYMBOLS at SHARED_RATE ticks/s, for a module."""
    prefix = unique_prefix("shared")
    group = Processes()
    try:
        hub = group.hub(prefix, redis_url)
        feed = group.feed(prefix, SHARED_SYMBOLS, SHARED_RATE, "--seed", "1", redis_url=redis_url)
        yield Shared(prefix, hub, feed, group, list(SHARED_SYMBOLS))
        assert hub.running(), f"the shared hub died:\n{hub.log()}"
    finally:
        group.stop_all()
        group.remove_logs()
        delete_prefix(redis_url, prefix)
