"""Fixtures of the cluster suite: `make_cluster` (hosts and processes, always torn down) and `report`.

`make_cluster(**options)` builds and starts a `Cluster` (tests/cluster/cluster.py); whatever
happens in the test (a failure, an error, Ctrl-C, a SIGTERM to pytest) every process is
stopped and every namespace and bridge removed after it. Before the first cluster, what
crashed runs left behind (their pid is gone) is removed. Without root or `ip netns` the
tests fail with a message saying so: they never skip.

`report(line)` keeps a measurement: all of them are printed at the end of the run, under
"cluster measurements", and on a failure with the test's output.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from loadtest.services import ROOT
from tests.cluster.cluster import Cluster
from tests.cluster.netns import require_netns, sweep_stale
from tests.support.fixtures import _failed

MEASUREMENTS: list[str] = []


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # pytest then runs every teardown


@pytest.fixture(scope="session")
def netns_ready() -> Iterator[Path]:
    """Root and `ip netns`, or a failure; what crashed runs left removed. Yields a data directory with a
    migrated key database, which each hub gets a copy of (the hubs admit anonymous clients, but read keys)."""
    require_netns()
    for program, package in (("haproxy", "haproxy"), ("redis-server", "redis-server")):
        if shutil.which(program) is None:
            pytest.fail(
                f"the cluster tests need {program}: apt-get install -y {package} (`make test` does)", pytrace=False
            )
    removed = sweep_stale()
    if removed:
        print(f"removed what crashed cluster runs left: {', '.join(removed)}", file=sys.stderr)
    data = Path(tempfile.mkdtemp(prefix="ms-cluster-data-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETSTREAM_") and k != "DATABASE_URL"}
        env.update(MARKETSTREAM_DATA_DIR=str(data), DJANGO_SETTINGS_MODULE="marketstream.settings")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120
        )
        yield data
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def make_cluster(request: pytest.FixtureRequest, netns_ready: Path) -> Iterator[Callable[..., Cluster]]:
    """A function that builds and starts a cluster: `make_cluster(symbols, rate, shards=1, sentinel=False,
    hub_env=None)`. Everything it started is removed after the test."""
    made: list[Cluster] = []

    def make(symbols: list[str], rate: float, **options: Any) -> Cluster:
        cluster = Cluster(data=netns_ready, **options)
        made.append(cluster)
        cluster.start(symbols, rate)
        return cluster

    previous = signal.signal(signal.SIGTERM, _sigterm)  # a SIGTERM to pytest tears the cluster down too
    try:
        yield make
    finally:
        try:
            for cluster in made:
                if _failed(request):
                    print(f"\nlogs of the cluster of {request.node.nodeid} (in {cluster.log_dir}):\n{cluster.logs()}")
                cluster.close()
        finally:
            signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Keep a measurement line (printed at the end of the run)."""
    name = request.node.name

    def add(line: str) -> None:
        MEASUREMENTS.append(f"{name}: {line}")
        print(line)

    return add


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASUREMENTS:
        terminalreporter.section("cluster measurements")
        for line in MEASUREMENTS:
            terminalreporter.write_line(line)
