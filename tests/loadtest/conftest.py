"""Fixtures of the load-test tests: Redis must answer (else FAIL, saying how to start it),
and a real hub with a real feed on a free port, under a prefix of this test run."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadtest.catalog import fetch_catalog, healthy
from loadtest.services import (
    REDIS_HINT,
    delete_prefix,
    free_port,
    hub_env,
    redis_ping,
    start_feed,
    start_hub,
    wait_until,
)

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not redis_ping(6379):
        pytest.fail(f"Redis is not answering on 127.0.0.1:6379. Start it with:\n  {REDIS_HINT}", pytrace=False)
    return REDIS_URL


@dataclass
class RunningHub:
    base: str  # http://127.0.0.1:PORT
    prefix: str
    symbols: int


@pytest.fixture
def hub_with_feed(redis_url: str) -> Iterator[RunningHub]:
    """`marketstream.serve` and `manage.py runfeed --generated 20 --rate 200`, stopped afterwards."""
    prefix = f"test-loadtest-{os.getpid()}-{time.time_ns()}"
    logs = Path(tempfile.mkdtemp(prefix="loadtest-test-"))
    env = hub_env(redis_url, prefix, 0.0, baseline=False)
    port = free_port()
    services = []
    try:
        hub = start_hub(port, 1, env, logs)
        services.append(hub)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthy(base), 30.0, hub, "the hub's /healthz")
        feed = start_feed(20, 200, env, logs)
        services.append(feed)
        wait_until(lambda: len(fetch_catalog(base)) >= 20, 30.0, feed, "the feed's symbols")
        yield RunningHub(base, prefix, 20)
    finally:
        for service in reversed(services):
            service.stop()
        delete_prefix(redis_url, prefix)
