"""The processes of docker/compose.yaml, started here as compose starts them: the hub's and the
feed's own command lines and metrics settings (ports replaced by free ones, loopback instead of
0.0.0.0, the project's Redis instead of compose's shards), checked with the healthchecks compose
runs on them. What tests/test_compose.py reads in the file, this runs.
"""

from __future__ import annotations

import subprocess
import sys

from loadtest.services import ROOT, Hub, free_port, service_env, spawn, wait_until
from tests.support.processes import READY_TIMEOUT, Processes, http_get, wait_healthy, wait_snapshots
from tests.support.promql import exposed_series
from tests.test_compose import environment, read_deployment


def replaced(argv: list[str], option: str, value: str) -> list[str]:
    """argv with the value after `option` replaced; `option` must be there."""
    assert option in argv, f"{option} not in {argv}"
    i = argv.index(option) + 1
    return [*argv[:i], value, *argv[i + 1 :]]


def as_here(argv: list[str]) -> list[str]:
    """The image's `python` is this interpreter; loopback instead of every address."""
    assert argv[0] == "python", argv
    return [sys.executable, *[("127.0.0.1" if a == "0.0.0.0" else a) for a in argv[1:]]]


def healthcheck(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(as_here(argv), capture_output=True, text=True, timeout=30, cwd=ROOT, env=env)


def test_the_hub_and_feed_run_and_pass_their_healthchecks_as_compose_starts_them(
    procs: Processes, prefix: str, redis_url: str
) -> None:
    services = read_deployment().services
    hub_port, hub_metrics, feed_metrics = free_port(), free_port(), free_port()

    hub_env = environment(services["hub1"]) | {
        "REDIS_URL": redis_url,
        "DATABASE_URL": "",  # compose's PostgreSQL is not here: SQLite in a data directory of the test
        "MARKETSTREAM_DATA_DIR": str(procs.log_dir / "data"),
        "MARKETSTREAM_METRICS_PORT": str(hub_metrics),
        "MARKETSTREAM_METRICS_HOST": "127.0.0.1",
        "PORT": str(hub_port),  # as the image's ENV sets it, for its HEALTHCHECK
    }
    env = service_env(redis_url, prefix, hub_env, clean=True)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True, timeout=120)
    argv = as_here(replaced(list(services["hub1"]["command"]), "--port", str(hub_port)))
    assert argument_of(argv, "--workers") == "2", "compose runs two workers per hub: so does this test"
    started = spawn("hub", argv, env, procs.log_dir)
    hub = procs.add(Hub(started.name, started.process, started.log_path, hub_port))
    wait_healthy(hub)

    # the image's HEALTHCHECK (no compose override for hubs): GET /healthz on $PORT
    check = healthcheck(["python", "-m", "marketstream.healthcheck"], env)
    assert check.returncode == 0, check.stdout + check.stderr
    # both workers started (each binds the metrics port too), and the listener answers for them
    wait_until(
        lambda: hub.log().count("Application startup complete") == 2 or "startup failed" in hub.log(),
        READY_TIMEOUT,
        hub,
        "both workers to start",
    )
    assert "startup failed" not in hub.log(), hub.log_tail()
    assert http_get(hub_metrics, "/metrics")[0] == 200
    assert hub.running(), hub.log_tail()

    feed_env = environment(services["feed"]) | {"REDIS_URL": redis_url, "DATABASE_URL": ""}
    feed_env |= {"MARKETSTREAM_DATA_DIR": str(procs.log_dir / "data"), "MARKETSTREAM_METRICS_HOST": "127.0.0.1"}
    env = service_env(redis_url, prefix, feed_env, clean=True)
    argv = as_here(replaced(list(services["feed"]["command"]), "--metrics-port", str(feed_metrics)))
    feed = procs.add(spawn("feed", argv, env, procs.log_dir))
    wait_snapshots(feed, prefix, ["AAPL"], redis_url)
    test = services["feed"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    check = healthcheck(replaced(test[1:], "--port", str(feed_metrics)), env)
    assert check.returncode == 0, check.stdout + check.stderr

    status, _, body = http_get(hub_metrics, "/metrics")
    assert status == 200 and exposed_series(body).get("marketstream_shard_up") == [{"shard": "0"}], body[:2000]


def argument_of(argv: list[str], option: str) -> str | None:
    return argv[argv.index(option) + 1] if option in argv[:-1] else None
