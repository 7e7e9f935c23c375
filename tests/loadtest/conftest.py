"""Fixtures of the load-test tests: a real hub with a real feed on a free port, started the
way the benchmark starts them (loadtest.services), under a prefix of this test.

`redis_url` (fails, saying how to start Redis, when it does not answer), `prefix` and
`procs` come from tests.support.fixtures.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from loadtest.catalog import fetch_catalog
from loadtest.services import free_port, hub_env, start_feed, start_hub, wait_until
from tests.support.processes import Processes, wait_healthy

SYMBOLS = 20


@dataclass
class RunningHub:
    base: str  # http://127.0.0.1:PORT
    prefix: str
    symbols: int


@pytest.fixture
def hub_with_feed(redis_url: str, prefix: str, procs: Processes) -> RunningHub:
    """`marketstream.serve` and `manage.py runfeed --generated 20 --rate 200`, stopped afterwards."""
    env = hub_env(redis_url, prefix, 0.0, baseline=False)
    hub = procs.add(start_hub(free_port(), 1, env, procs.log_dir))
    wait_healthy(hub)
    feed = procs.add(start_feed(SYMBOLS, 200, env, procs.log_dir))
    wait_until(lambda: len(fetch_catalog(hub.base)) >= SYMBOLS, 30.0, feed, "the feed's symbols")
    return RunningHub(hub.base, prefix, SYMBOLS)
