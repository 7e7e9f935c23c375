"""`python -m loadtest.ingest`, sized down: it starts its hub and key database, posts, and
what it counts as accepted is what Redis holds."""

from __future__ import annotations

import json
import subprocess
import sys

from loadtest.services import ROOT


def test_ingest_tiny(redis_url: str) -> None:
    argv = [sys.executable, "-m", "loadtest.ingest", "--seconds", "1", "--warmup", "0.5", "--batch", "50"]
    done = subprocess.run(
        [*argv, "--connections", "2", "--symbols", "5"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"ingest exited with {done.returncode}:\n{done.stderr[-3000:]}"
    result = json.loads(done.stdout.splitlines()[0])
    assert result["ticks_per_s"] > 0 and result["errors"] == {}
    assert result["stored_total"] == result["accepted_total"] > 0, "every accepted tick is in Redis"
    assert result["history_ING0000"] > 0
    assert "ticks/s accepted and published" in done.stdout
