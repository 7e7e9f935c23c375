"""`locust -f loadtest --headless` against a real hub and feed: ticks are received and reported."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from loadtest.services import ROOT
from tests.loadtest.conftest import RunningHub


def test_locust_headless_reports_ticks(hub_with_feed: RunningHub, tmp_path: Path) -> None:
    prefix = tmp_path / "smoke"
    argv = [sys.executable, "-m", "locust", "-f", "loadtest", "--headless", "-u", "5", "-r", "5", "-t", "5s"]
    argv += ["--host", hub_with_feed.base, "--csv", str(prefix), "--symbols-per-user", "5", "--ping-every", "1"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"locust exited with {done.returncode}:\n{output[-3000:]}"

    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
    ticks = rows[("WS", "ticks")]
    assert int(ticks["Request Count"]) > 20, ticks
    assert int(ticks["Failure Count"]) == 0
    assert float(ticks["Median Response Time"]) < 1000, "end-to-end latency of a lightly loaded hub is well below 1 s"
    assert int(rows[("WS", "connect")]["Request Count"]) == 5
    assert int(rows[("WS", "ping")]["Request Count"]) > 0
    assert ("WS", "seq violation") not in rows

    summary = json.loads(Path(f"{prefix}_ticks.json").read_text())
    assert summary["ticks"] >= int(ticks["Request Count"]), "a frame carries at least one tick"
    assert summary["seq_violations"] == 0
    assert summary["disconnects"] == 0
    assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"] <= summary["latency_ms"]["max"] + 1
