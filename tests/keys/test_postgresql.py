"""The key tests again, on PostgreSQL: test_models.py, test_commands.py and test_gate.py with DATABASE_URL.

A separate pytest process, because Django reads DATABASES once per process; pytest-django
creates and drops its own test database (`test_<name>`) there. Without PostgreSQL on
127.0.0.1:5432 this fails (never skips) and says how to start it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from tests.embedded import ROOT

URL = os.environ.get("MARKETSTREAM_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


def test_the_key_tests_pass_on_postgresql() -> None:
    try:
        psycopg.connect(URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not answering at {URL} ({exc}). Start it with:\n  {START}")
    modules = [str(ROOT / "tests" / "keys" / name) for name in ("test_models.py", "test_commands.py", "test_gate.py")]
    env = {**os.environ, "DATABASE_URL": URL}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *modules],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-2000:]
