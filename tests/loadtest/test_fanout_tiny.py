"""`python -m loadtest.fanout --scenario tiny`: starts hub and feed itself and writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from loadtest.services import ROOT


def test_fanout_tiny_scenario(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "tiny.json"
    argv = [sys.executable, "-m", "loadtest.fanout", "--scenario", "tiny", "--json-out", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, f"fanout exited with {done.returncode}:\n{done.stderr[-3000:]}"
    first_line = json.loads(done.stdout.splitlines()[0])
    document = json.loads(out.read_text())
    assert first_line == document
    result = document["ours"]
    for field in ("connections", "offered_ticks_per_s", "wanted_ticks_per_s", "delivered_ticks_per_s",
                  "delivery_ratio", "frames_per_s", "latency_ms", "seq_violations", "ends_on_latest",
                  "hub_cpu_us_per_tick", "hub_rss_kb_per_connection"):  # fmt: skip
        assert field in result, field
    assert result["connections"] == 20
    assert result["delivered_ticks_per_s"] > 0
    assert 0.95 <= result["delivery_ratio"] <= 1.05, result["delivery_ratio"]
    assert result["seq_violations"] == 0
    assert result["ends_on_latest"]["ok"], result["ends_on_latest"]
    assert set(result["latency_ms"]) == {"p50", "p90", "p99", "max"}
    assert result["hub_cpu_us_per_tick"] > 0
    assert "delivered ticks/s" in done.stdout, "the readable table follows the JSON line"


def test_fanout_tiny_baseline_runs_the_seed_pattern(redis_url: str, tmp_path: Path) -> None:
    """`--baseline-only`: the seed app (loadtest.seed) on the core layer, with its own feed, delivers every tick."""
    out = tmp_path / "baseline.json"
    argv = [sys.executable, "-m", "loadtest.fanout", "--scenario", "tiny", "--baseline-only", "--json-out", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, f"fanout exited with {done.returncode}:\n{done.stderr[-3000:]}"
    document = json.loads(out.read_text())
    assert "ours" not in document
    result = document["baseline"]
    assert result["variant"] == "baseline" and result["scenario"]["encoding"] == "json"
    assert result["connections"] == 20
    assert 0.95 <= result["delivery_ratio"] <= 1.05, result["delivery_ratio"]
    assert result["seq_violations"] == 0
    assert result["ends_on_latest"]["ok"], result["ends_on_latest"]
