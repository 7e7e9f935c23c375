"""`python -m loadtest.scriptcost`, sized down: two Redis servers under valgrind, a few
batches each. It reports instructions per tick for both variants, bars costing more than
none, and what it counted is the script's work: twice the batches, about twice the
instructions. A benchmark, not a timed test: the bounds are loose."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from loadtest import scriptcost


@pytest.fixture(autouse=True)
def valgrind_is_there() -> None:
    if shutil.which("valgrind") is None:
        pytest.fail("loadtest.scriptcost needs valgrind: apt-get install -y valgrind (make test installs it)")


def runs(tmp_path: Path, batches: int, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    out = tmp_path / f"cost-{batches}.json"
    argv = ["--batches", str(batches), "--symbols", "10", "--top", "3", "--keep", str(tmp_path / "cg")]
    assert scriptcost.main([*argv, "--json-out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "per tick" in printed and "no bars" in printed
    result = json.loads(out.read_text())["runs"]
    assert isinstance(result, list)
    return result


def test_scriptcost_counts_both_variants(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    few, more = runs(tmp_path, 20, capsys), runs(tmp_path, 40, capsys)
    for result, batches in ((few, 20), (more, 40)):
        assert [r["bars"] for r in result] == [True, False]
        assert all(r["ticks"] == batches * 5 for r in result)
        bars, plain = (r["instructions_per_tick"] for r in result)
        assert 20_000 < plain < bars < 2_000_000, result
        assert all(r["top"] and "%" in r["top"][0] for r in result), "the costliest functions are listed"
    assert (tmp_path / "cg" / "callgrind.bars.out").is_file(), "--keep keeps callgrind's files"
    # only the script's calls count: one more call per batch, about its share more instructions
    for a, b in zip(few, more, strict=True):
        ratio = b["instructions"] / a["instructions"]
        assert 1.6 < ratio < 2.2, (a["instructions"], b["instructions"])
