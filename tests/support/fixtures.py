"""The pytest fixtures of tests that run real processes (a plugin: tests/conftest.py loads it).

- `redis_url`: the project's Redis, or a failure that says how to start it (never a skip);
- `prefix`: a key prefix of this test, whose keys are deleted after it;
- `procs`: a `Processes` group, stopped after the test (its logs printed when the test failed).

`embedded_hub` (no Redis needed) is in tests/embedded.py.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from loadtest.services import delete_prefix
from tests.support.processes import REDIS_URL, Processes, require_redis, unique_prefix

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    report = request.node.stash.get(_REPORTS, {}).get("call")
    return report is not None and report.failed


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The project's Redis (127.0.0.1:6379); fails the test when it does not answer."""
    require_redis()
    return REDIS_URL


@pytest.fixture
def prefix(request: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    value = unique_prefix(request.node.name[:24].replace("[", "-").replace("]", "").replace("/", "-"))
    try:
        yield value
    finally:
        delete_prefix(redis_url, value)


@pytest.fixture
def procs(request: pytest.FixtureRequest) -> Iterator[Processes]:
    group = Processes()
    try:
        yield group
    finally:
        if _failed(request):
            print(f"\nprocess logs of {request.node.nodeid}:\n{group.logs()}")
        group.stop_all()
        group.remove_logs()
