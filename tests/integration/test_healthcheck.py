"""`python -m marketstream.healthcheck` (the image's HEALTHCHECK) against a real hub: healthy
while it answers `ok` or `degraded`, unhealthy when it is `unavailable` or does not answer."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from loadtest.services import ROOT, free_port, wait_until
from tests.support.processes import READY_TIMEOUT, Processes, http_json


def healthcheck(*args: str) -> tuple[int, str]:
    """Run the module as the HEALTHCHECK does (a fresh interpreter): (exit code, its line)."""
    run = subprocess.run(
        [sys.executable, "-m", "marketstream.healthcheck", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},  # no DJANGO_SETTINGS_MODULE, no REDIS_URL: it needs none
    )
    assert run.stderr == "", run.stderr
    return run.returncode, run.stdout.strip()


def wait_status(port: int, want: str) -> None:
    wait_until(lambda: http_json(port, "/healthz")[1].get("status") == want, READY_TIMEOUT, None, f"/healthz {want}")


def test_ok_and_degraded_are_healthy_unavailable_is_not(procs: Processes, prefix: str) -> None:
    shard0, shard1 = free_port(), free_port()
    redis0, redis1 = procs.redis_server(shard0), procs.redis_server(shard1)
    url = f"redis://127.0.0.1:{shard0}/0,redis://127.0.0.1:{shard1}/0"
    hub = procs.hub(prefix, url, env={"MARKETSTREAM_SHARD_TIMEOUT_S": "0.5"})

    assert http_json(hub.port, "/healthz")[1]["status"] == "ok"
    code, line = healthcheck("--port", str(hub.port))
    assert code == 0 and "status 'ok'" in line, line

    redis1.kill()
    wait_status(hub.port, "degraded")
    code, line = healthcheck("--port", str(hub.port))
    assert code == 0 and "HTTP 200, status 'degraded'" in line, line

    redis0.kill()
    wait_status(hub.port, "unavailable")
    code, line = healthcheck("--port", str(hub.port))
    assert code == 1 and "HTTP 503, status 'unavailable'" in line, line


def test_the_port_comes_from_the_environment_as_for_the_hub(procs: Processes, prefix: str, redis_url: str) -> None:
    hub = procs.hub(prefix, redis_url)
    run = subprocess.run(
        [sys.executable, "-m", "marketstream.healthcheck"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PORT": str(hub.port)},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f":{hub.port}/healthz" in run.stdout


def test_no_answer_is_unhealthy() -> None:
    code, line = healthcheck("--port", str(free_port()), "--timeout", "1")
    assert code == 1 and line.startswith("unhealthy: ") and "no answer" in line, line


class _Fixed(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the class's status and body (a server that is not the hub)."""

    status = 200
    body = b"<html>not a hub</html>"

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Fixed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_200_that_is_not_the_hubs_healthz_is_unhealthy_but_enough_on_another_path(
    other_server: http.server.ThreadingHTTPServer,
) -> None:
    port = str(other_server.server_address[1])
    code, line = healthcheck("--port", port)
    assert code == 1 and "not the hub's /healthz answer" in line, line
    code, line = healthcheck("--port", port, "--path", "/metrics")
    assert code == 0 and "HTTP 200" in line, line
