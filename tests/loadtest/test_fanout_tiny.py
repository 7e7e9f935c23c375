"""`python -m loadtest.fanout --scenario tiny`: starts hub and feed itself and writes its JSON;
`--scenario recovery`, sized down, restarts the hub under its clients."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from loadtest.clients import RECOVERY_FRAME_TICKS, backoff, recovery_frame
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


def test_fanout_tiny_with_the_bare_websockets_baseline(redis_url: str, tmp_path: Path) -> None:
    """`--baseline bare`: ours, then loadtest/bare.py on the same feed; both deliver every tick
    in seq order, and both CPU ratios are reported in the one run."""
    out = tmp_path / "bare.json"
    argv = [sys.executable, "-m", "loadtest.fanout", "--scenario", "tiny", "--baseline", "bare", "--json-out", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, f"fanout exited with {done.returncode}:\n{done.stderr[-3000:]}"
    document = json.loads(out.read_text())
    bare = document["bare"]
    assert bare["variant"] == "bare" and bare["connections"] == 20
    assert 0.95 <= bare["delivery_ratio"] <= 1.05, bare["delivery_ratio"]
    assert bare["seq_violations"] == 0 and bare["ticks_per_frame"] == 1
    assert document["cpu_ratio_bare_over_ours"] > 0 and document["cpu_ratio_ours_over_bare"] > 0
    assert "ours / bare websockets" in done.stdout


def test_fanout_tiny_with_bars(redis_url: str, tmp_path: Path) -> None:
    """`--bars`: every client also asks for 1s and 1m bars; they arrive, and the ticks as before."""
    out = tmp_path / "bars.json"
    argv = [sys.executable, "-m", "loadtest.fanout", "--scenario", "tiny", "--bars", "--json-out", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, f"fanout exited with {done.returncode}:\n{done.stderr[-3000:]}"
    result = json.loads(out.read_text())["ours"]
    assert result["scenario"]["bars"] == ["1s", "1m"]
    assert result["bars_per_s"] > 0 and 0 < result["bar_frames_per_s"] < result["frames_per_s"], result
    assert 0.95 <= result["delivery_ratio"] <= 1.05, result["delivery_ratio"]
    assert result["seq_violations"] == 0 and result["error_frames"] == 0
    assert "bars/s" in done.stdout


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


def test_fanout_tiny_recovery_storm(redis_url: str, tmp_path: Path) -> None:
    """`--scenario recovery`, sized down: the hub restarts under its clients (1012), every
    client reconnects with `since` and recovers every symbol, and no seq is lost."""
    out = tmp_path / "recovery.json"
    sizes = ["--clients", "20", "--symbols", "10", "--symbols-per-client", "5", "--rate", "200"]
    times = ["--warmup", "1", "--duration", "1.5", "--restart-after", "1", "--client-procs", "1"]
    argv = [sys.executable, "-m", "loadtest.fanout", "--scenario", "recovery", *sizes, *times, "--json-out", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"fanout exited with {done.returncode}:\n{done.stderr[-3000:]}"
    result = json.loads(out.read_text())["ours"]
    storm = result["storm"]
    assert result["connections"] == 20
    assert storm["closes"] == {"1012": 20}, storm["closes"]
    assert storm["reconnected"] == storm["live"] == 20, storm
    assert storm["all_live_s"] is not None and storm["all_live_s"] > storm["old_hub_stopped_s"], storm
    assert storm["recovered_true"] == 20 * 5 and storm["recovered_false"] == 0, storm["refused"]
    assert storm["recovered_ticks"] > 0 and storm["recovered_frames"] > 0
    assert result["lost"] == 0 and result["overcounted"] == 0 and result["seq_violations"] == 0, result
    assert result["ends_on_latest"]["ok"], result["ends_on_latest"]
    assert 0.95 <= result["delivery_ratio"] <= 1.05, result["delivery_ratio"]
    assert storm["new_hub_cpu_s"]["to_all_live"] > 0
    assert "all live s" in done.stdout, "the readable table has the storm's rows"


def test_recovered_frames_are_told_from_live_ones() -> None:
    """After a resubscribe's ack: a frame of one recovered symbol that continues from `since`
    is recovered; a frame of several symbols, or one that does not continue, is live."""
    expected = {"A": 11, "B": 21}
    assert not recovery_frame([{"symbol": "A", "seq": 11}, {"symbol": "B", "seq": 21}], expected)
    assert not recovery_frame([{"symbol": "A", "seq": 12}], expected)
    assert recovery_frame([{"symbol": "A", "seq": 11}, {"symbol": "A", "seq": 12}], expected)
    assert expected == {"B": 21}
    assert not recovery_frame([{"symbol": "A", "seq": 13}], expected), "A's recovery is over"
    assert recovery_frame([{"symbol": "B", "seq": 25, "conflated": 4}], expected), "throttled: one tick"
    full = [{"symbol": "C", "seq": n} for n in range(1, RECOVERY_FRAME_TICKS + 1)]
    expected = {"C": 1}
    assert recovery_frame(full, expected) and expected == {"C": RECOVERY_FRAME_TICKS + 1}


def test_backoff_is_exponential_with_full_jitter() -> None:
    rng = random.Random(1)
    for attempt, bound in ((0, 0.1), (1, 0.2), (3, 0.8), (5, 2.0), (40, 2.0)):
        delays = [backoff(attempt, 0.1, 2.0, rng) for _ in range(200)]
        assert all(0 <= d <= bound for d in delays)
        assert max(delays) > 0.8 * bound, "spread over the whole interval"
