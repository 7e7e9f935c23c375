"""`make run`'s server for tests (the browser and docs tests): the embedded default on a free port.

A plugin (tests/conftest.py loads it); the hub is started and stopped by tests.support.processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loadtest.services import ROOT
from tests.support.processes import Processes

__all__ = ["ROOT", "embedded_hub"]  # ROOT: the repository, for tests that read its files


@pytest.fixture(scope="module")
def embedded_hub() -> Iterator[int]:
    """`make run`'s server: the embedded default (no REDIS_URL, demo feed in the server); its port."""
    group = Processes()
    try:
        yield group.hub(None, redis_url=None, env={"MARKETSTREAM_EMBEDDED_FEED_RATE": "200"}).port
    finally:
        group.stop_all()
        group.remove_logs()
