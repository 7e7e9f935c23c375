"""A throwaway key database for benchmarks that connect with an API key.

`key_database()` makes a temporary MARKETSTREAM_DATA_DIR, runs ``manage.py migrate`` and
``manage.py createkey`` in it (a key allowed 1,000,000 connections and 1,000 requests/s,
so the per-key limits never stop a benchmark), and yields the environment a hub needs to
read that database with anonymous access off, and the key. The directory is removed on exit.
Nothing is measured here: the hubs started with this environment are.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from loadtest.services import ROOT, ServiceError, service_env

MAX_CONNECTIONS = 1_000_000
MAX_REQUESTS_PER_S = 1000


class KeyDatabase(NamedTuple):
    """What a benchmark needs from the key database: `env`, the additions to a hub's
    environment (MARKETSTREAM_DATA_DIR, MARKETSTREAM_ANONYMOUS=false, DATABASE_URL empty so
    the SQLite file is used), and `key`, the API key (``ms_...``)."""

    env: dict[str, str]
    key: str


def _manage(args: list[str], env: dict[str, str], timeout: float = 120.0) -> str:
    """Run ``python manage.py ARGS`` in the repository; its stdout. Raises ServiceError
    with its stderr when it fails."""
    try:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"manage.py {args[0]} did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise ServiceError(f"manage.py {args[0]} exited with {done.returncode}:\n{done.stderr.strip()[-2000:]}")
    return done.stdout


def create_key_database(data_dir: Path, name: str = "bench", publish: bool = False) -> KeyDatabase:
    """Migrate a SQLite database in `data_dir` and create the key `name` in it (with
    `publish`, a key that may publish: HTTP ingest)."""
    env = {"MARKETSTREAM_DATA_DIR": str(data_dir), "MARKETSTREAM_ANONYMOUS": "false", "DATABASE_URL": ""}
    manage_env = service_env(None, None, {**env, "LOG_LEVEL": "WARNING"}, clean=True)
    _manage(["migrate", "--noinput"], manage_env)
    argv = ["createkey", "--name", name, "--max-connections", str(MAX_CONNECTIONS)]
    argv += ["--max-requests-per-s", str(MAX_REQUESTS_PER_S)]
    argv += ["--publish"] if publish else []
    key = _manage(argv, manage_env).strip()
    if not key.startswith("ms_"):
        raise ServiceError(f"manage.py createkey printed {key[:20]!r}..., expected a key (ms_...)")
    return KeyDatabase(env, key)


@contextlib.contextmanager
def key_database(name: str = "bench", publish: bool = False) -> Iterator[KeyDatabase]:
    """A temporary key database with one key (see the module docstring); removed on exit."""
    data_dir = Path(tempfile.mkdtemp(prefix="marketstream-keys-"))
    try:
        yield create_key_database(data_dir, name, publish)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
