"""The terminal client, `python -m marketstream.client`, against a real hub and feed.

- under a pseudo-terminal it draws a live table of its symbols, and Ctrl-C (the
  terminal's own, a \\x03 typed into it) ends it cleanly: status 0, no traceback;
- `--json` prints one tick per line; `--record` writes them to a file replay reads;
- a refused key ends it with status 1 and the reason.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

from feeds.replay import read_records
from loadtest.services import ROOT
from tests.integration.conftest import Shared

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
WAIT = 20.0


def command(shared: Shared, *args: str) -> list[str]:
    return [sys.executable, "-m", "marketstream.client", *args, "--url", shared.hub.ws_url]


def spawn_in_pty(argv: list[str], columns: int = 120) -> tuple[int, int]:
    """Run `argv` with a pseudo-terminal as its controlling terminal; (pid, master fd)."""
    pid, master = pty.fork()
    if pid == 0:  # the child: size the terminal, then become the client
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
            os.chdir(ROOT)
            os.execve(argv[0], argv, {**os.environ, "TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"})
        finally:
            os._exit(127)
    return pid, master


def read_until(master: int, done: Callable[[str], bool], within: float = WAIT) -> str:
    """Read the terminal until `done(text)` holds (text without ANSI codes); the raw text."""
    raw = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            raw += chunk
            if done(ANSI.sub("", raw.decode(errors="replace"))):
                return raw.decode(errors="replace")
    raise AssertionError(
        f"the terminal never showed what was expected; it showed:\n{ANSI.sub('', raw.decode()[-3000:])}"
    )


def wait_exit(pid: int, within: float = 10.0) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the terminal client did not exit within {within} s")


def test_a_live_table_under_a_pseudo_terminal_and_a_clean_ctrl_c(shared: Shared) -> None:
    pid, master = spawn_in_pty(command(shared, "AAPL", "MSFT", "--throttle-ms", "250"))
    try:

        def table_with_rates(text: str) -> bool:
            rows = [line for line in text.splitlines() if re.search(r"\b(AAPL|MSFT)\b.*\d+\.\d+.*\d+\.\d", line)]
            return "upd/s" in text and any("AAPL" in r for r in rows) and any("MSFT" in r for r in rows)

        screen = ANSI.sub("", read_until(master, table_with_rates))
        for column in ("symbol", "last", "bid", "ask", "change", "upd/s", "gaps"):
            assert column in screen, f"no {column} column:\n{screen[-2000:]}"
        time.sleep(1.0)
        os.write(master, b"\x03")  # Ctrl-C, as typed: the terminal sends SIGINT to the client
        rest = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            rest += chunk
        code = wait_exit(pid)
        assert code == 0, rest.decode(errors="replace")
        assert "Traceback" not in rest.decode(errors="replace")
        assert b"\x1b[?25h" in rest, "the cursor is shown again"
    finally:
        os.close(master)


def test_json_lines_and_a_recording_that_replay_reads(shared: Shared, tmp_path: Path) -> None:
    record = tmp_path / "ticks.ndjson"
    process = subprocess.Popen(
        command(shared, "AAPL", "EUR/USD", "--json", "--record", str(record)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(12)]
        ticks = [json.loads(line) for line in lines]
        assert {t["symbol"] for t in ticks} == {"AAPL", "EUR/USD"}
        assert all({"seq", "ts", "price", "bid", "ask", "size"} <= set(t) for t in ticks)
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0, process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    recorded = list(read_records(record))
    assert len(recorded) >= 12
    assert [(q[0], q[1]) for _, q in recorded[:12]] == [(t["symbol"], t["price"]) for t in ticks]
    assert [at for at, _ in recorded[:12]] == [t["ts"] for t in ticks], "the tick's ts is the record's time"


def test_a_refused_key_ends_with_status_1_and_the_reason(shared: Shared) -> None:
    # the shared hub admits anonymous clients, but a bad key is refused even there
    run = subprocess.run(
        command(shared, "AAPL", "--key", "ms_" + "x" * 43), cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 1 and "HTTP 403" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
