"""`manage.py` as an operator runs it: a fresh data directory, migrate, createkey on a real stdout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.embedded import ROOT


def manage(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MARKETSTREAM_ADMIN")}
    env["MARKETSTREAM_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_a_fresh_data_directory_is_created_migrated_and_holds_the_keys(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert manage(data, "migrate", "--noinput").returncode == 0
    assert (data / "marketstream.sqlite3").is_file()
    made = manage(data, "createkey", "--name", "desk", "--symbols", "AAPL")
    assert made.returncode == 0, made.stderr
    assert len(made.stdout) == 47 and made.stdout.startswith("ms_") and made.stdout.endswith("\n")
    listed = manage(data, "listkeys")
    assert "desk" in listed.stdout and made.stdout.strip() not in listed.stdout
    bad = manage(data, "createkey", "--name", "desk")
    assert bad.returncode != 0 and bad.stdout == "" and "exists already" in bad.stderr


def test_the_admin_is_off_by_default(tmp_path: Path) -> None:
    shown = manage(tmp_path, "shell", "-c", "from django.conf import settings; print(settings.MARKETSTREAM['ADMIN'])")
    assert shown.stdout.splitlines()[-1] == "False", shown.stdout + shown.stderr
