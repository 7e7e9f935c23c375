"""`serve`'s multiprocess directory: made per run for several workers, an operator's emptied."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from marketstream import serve


@pytest.fixture
def no_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PROMETHEUS_MULTIPROC_DIR, and none left after the test (serve sets it directly)."""
    monkeypatch.setenv(serve.MULTIPROC_ENV, "recorded: removed again after the test")
    monkeypatch.delenv(serve.MULTIPROC_ENV)


def test_several_workers_get_a_fresh_directory(no_directory: None) -> None:
    directory, made = serve.metrics_directory(2)
    try:
        assert made and directory is not None and directory.is_dir() and not any(directory.iterdir())
        assert os.environ[serve.MULTIPROC_ENV] == str(directory), "the workers inherit it"
    finally:
        if directory is not None:
            directory.rmdir()


def test_one_worker_without_a_directory_keeps_its_own_registry(no_directory: None) -> None:
    assert serve.metrics_directory(1) == (None, False)


def test_an_operators_directory_is_emptied_of_an_earlier_runs_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    given = tmp_path / "prom"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"old")
    (given / "README").write_text("not ours")
    monkeypatch.setenv(serve.MULTIPROC_ENV, str(given))
    assert serve.metrics_directory(1) == (given, False)
    assert [p.name for p in given.iterdir()] == ["README"]
