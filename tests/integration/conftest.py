"""Fixtures of the integration tests: the real Redis, hubs and feeds as subprocesses, key prefixes.

Every process a fixture starts is stopped in its teardown (in a `finally`), and every Redis key
under a test's prefix is deleted after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.integration.procs import (
    REDIS_URL,
    HubProc,
    Proc,
    Processes,
    delete_prefix_keys,
    require_redis,
    unique_prefix,
)

SHARED_SYMBOLS = ["AAPL", "MSFT", "EUR/USD", "BTC/USD", "NVDA", "TSLA"]
SHARED_RATE = 200  # ticks/s over the shared symbols: about 33 per symbol per second


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "rep_call", None)
    return report is not None and report.failed


@pytest.fixture(scope="session", autouse=True)
def _redis_required() -> None:
    require_redis()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    value = unique_prefix(request.node.name[:24].replace("[", "-").replace("]", "").replace("/", "-"))
    try:
        yield value
    finally:
        delete_prefix_keys(value)


@pytest.fixture
def procs(request: pytest.FixtureRequest) -> Iterator[Processes]:
    group = Processes()
    try:
        yield group
    finally:
        if _failed(request):
            print(f"\nprocess logs of {request.node.nodeid}:\n{group.logs()}")
        group.stop_all()


@dataclass
class Shared:
    """A hub and a feed running for a whole test module."""

    prefix: str
    hub: HubProc
    feed: Proc
    procs: Processes
    symbols: list[str]


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    """One hub (default limits) and one feed of SHARED_SYMBOLS at SHARED_RATE ticks/s, for a module."""
    prefix = unique_prefix("shared")
    group = Processes()
    try:
        hub = group.hub(prefix, REDIS_URL)
        feed = group.feed(prefix, SHARED_SYMBOLS, SHARED_RATE, "--seed", "1")
        yield Shared(prefix, hub, feed, group, list(SHARED_SYMBOLS))
        assert hub.alive(), f"the shared hub died:\n{hub.log()}"
    finally:
        group.stop_all()
        delete_prefix_keys(prefix)
