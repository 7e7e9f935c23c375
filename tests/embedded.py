"""`make run`'s server for tests: the embedded default (no REDIS_URL) on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.services import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def embedded_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """`make run`'s server: the embedded default, no REDIS_URL."""
    port = free_port()
    log = (tmp_path_factory.mktemp("hub") / "hub.log").open("w+b")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "MARKETSTREAM_"))}
    env["MARKETSTREAM_EMBEDDED_FEED_RATE"] = "200"
    proc = subprocess.Popen(
        [sys.executable, "-m", "marketstream.serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise AssertionError(f"the embedded hub did not start:\n{log.read().decode(errors='replace')}")
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
