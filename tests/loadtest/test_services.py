"""loadtest.services, the one way benchmarks and tests start and stop processes."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

from loadtest.services import SEED_APP, SEED_SETTINGS, ServiceError, hub_argv, hub_env, spawn, wait_until


def test_our_hub_is_marketstream_serve() -> None:
    argv = hub_argv(8123, 2)
    assert argv[:3] == [sys.executable, "-m", "marketstream.serve"]
    assert argv[3:] == ["--host", "127.0.0.1", "--port", "8123", "--workers", "2", "--log-level", "warning"]


def test_the_baseline_is_uvicorn_on_the_seed_app_with_our_server_options() -> None:
    argv = hub_argv(8123, 2, baseline=True)
    assert argv[:4] == [sys.executable, "-m", "uvicorn", "loadtest.seed.asgi:application"]
    assert SEED_APP == argv[3]
    options = " ".join(argv[4:])
    expected = [
        "--host 127.0.0.1",
        "--port 8123",
        "--workers 2",
        "--ws websockets-sansio",
        "--ws-per-message-deflate false",
        "--lifespan on",
        "--no-access-log",
        "--log-level warning",
    ]
    for option in expected:
        assert option in options
    assert SEED_SETTINGS == "loadtest.seed.settings"


@pytest.mark.parametrize(
    ("baseline", "layer", "settings", "expected"),
    [
        (False, None, "marketstream.settings", None),
        (False, "core", "marketstream.settings", "core"),
        (True, None, "loadtest.seed.settings", "core"),
        (True, "pubsub", "loadtest.seed.settings", "pubsub"),
    ],
)
def test_hub_env(
    baseline: bool, layer: str | None, settings: str, expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MARKETSTREAM_CONSUMER", raising=False)
    monkeypatch.delenv("MARKETSTREAM_LAYER", raising=False)
    env = hub_env("redis://127.0.0.1:1/0", "p-1", 2.5, baseline, layer)
    assert env.get("MARKETSTREAM_LAYER") == expected
    assert env["REDIS_URL"] == "redis://127.0.0.1:1/0" and env["MARKETSTREAM_PREFIX"] == "p-1"
    assert env["MARKETSTREAM_FLUSH_MS"] == "2.5"
    assert env["DJANGO_SETTINGS_MODULE"] == settings, "the feed takes it too: it publishes on the hub's layer"
    assert "MARKETSTREAM_CONSUMER" not in env, "the seed is its own app now, not a product setting"


def test_stop_ends_the_whole_process_group_and_logs_are_kept_apart(tmp_path: Path) -> None:
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
    script += "print('started', flush=True); time.sleep(60)"
    first = spawn("sleeper", [sys.executable, "-c", script], dict(os.environ), tmp_path)
    second = spawn("sleeper", [sys.executable, "-c", "print('second')"], dict(os.environ), tmp_path)
    wait_until(lambda: "started" in first.log() and len(psutil.Process(first.pid).children()) == 1, 10.0, first)
    child = psutil.Process(first.pid).children()[0]
    assert first.stop(5.0, signal.SIGTERM) == -signal.SIGTERM
    child.wait(5.0)  # psutil.TimeoutExpired if the child survived its group's stop
    assert second.wait(10.0) == 0
    assert first.log_path != second.log_path and second.log() == "second\n"
    assert not first.running() and first.stop() == -signal.SIGTERM, "stopping again is harmless"


def test_wait_until_reports_an_exit_with_the_log(tmp_path: Path) -> None:
    service = spawn(
        "failing", [sys.executable, "-c", "import sys; print('no luck'); sys.exit(3)"], dict(os.environ), tmp_path
    )
    with pytest.raises(ServiceError, match=r"(?s)failing exited with 3 before the thing.*no luck"):
        wait_until(lambda: False, 10.0, service, "the thing")
