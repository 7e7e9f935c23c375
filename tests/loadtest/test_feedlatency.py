"""`python -m loadtest.feedlatency`, sized down to a few seconds on the real Redis: it receives
the feed's ticks, reports plausible latencies and costs, and leaves no key behind. A
benchmark, not a timed test: the bounds are loose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from loadtest import feedlatency

RATE, SECONDS = 200, 2


def test_feedlatency_measures_a_short_run_and_cleans_up(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prefixes: list[str] = []

    def recorded_prefix() -> str:
        prefixes.append(fresh())
        return prefixes[-1]

    fresh = feedlatency.fresh_prefix
    monkeypatch.setattr(feedlatency, "fresh_prefix", recorded_prefix)
    out = tmp_path / "feedlatency.json"
    argv = ["--rate", str(RATE), "--symbols", "20", "--seconds", str(SECONDS), "--warmup", "0.5"]
    code = feedlatency.main([*argv, "--redis-url", redis_url, "--json-out", str(out)])

    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    lines = printed.out.splitlines()
    document = json.loads(lines[0])
    assert json.loads(out.read_text()) == document, "--json-out holds the printed document"
    assert "p50 ms" in lines[1] and len(lines) == 3, "a table header and one row follow the JSON"
    [run] = document["runs"]
    assert run["rate"] == RATE and run["symbols"] == 20 and run["seconds"] == SECONDS, run
    assert run["ticks"] >= 0.6 * RATE * SECONDS, run
    latency = run["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"], latency
    assert latency["p99"] < 1000, latency
    assert run["feed_cpu_us_per_tick"] > 0 and run["evalsha_us_per_call"] > 0, run
    assert run["other"] == 0, run

    [prefix] = prefixes
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"{prefix}*", count=1000)) == [], f"keys of {prefix} remain"
    finally:
        client.close()
