"""The docs say what the code does: the client example runs as written, every setting is documented."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def embedded_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """`make run`'s server: the embedded default, no REDIS_URL."""
    port = free_port()
    log = (tmp_path_factory.mktemp("hub") / "hub.log").open("w+b")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "MARKETSTREAM_"))}
    env["MARKETSTREAM_EMBEDDED_FEED_RATE"] = "200"
    proc = subprocess.Popen(
        [sys.executable, "-m", "marketstream.serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise AssertionError(f"the embedded hub did not start:\n{log.read().decode(errors='replace')}")
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, re.S)


def test_the_protocol_page_example_runs_as_written(embedded_hub: int, tmp_path: Path) -> None:
    (block,) = python_blocks((ROOT / "docs" / "protocol.md").read_text())
    assert len(block.strip().splitlines()) <= 15, "the example is meant to be 15 lines"
    script = tmp_path / "client.py"
    script.write_text(block.replace("127.0.0.1:8000", f"127.0.0.1:{embedded_hub}"))
    try:
        out = subprocess.run([sys.executable, "-u", str(script)], capture_output=True, text=True, timeout=6).stdout
    except subprocess.TimeoutExpired as exc:  # it streams until stopped
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
    lines = out.splitlines()
    assert "'type': 'welcome'" in lines[0]
    assert "'type': 'ack'" in lines[1] and "'rejected': {}" in lines[1]
    assert {line.split()[1] for line in lines if line.startswith("snapshot ")} == {"AAPL", "EUR/USD"}, out
    assert any(line.startswith("ticks ") for line in lines), out


def test_the_landing_page_is_served(embedded_hub: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{embedded_hub}/", timeout=5) as r:
        page = r.read().decode()
    assert "marketstream" in page and "/ws/v1/stream" in page


def test_every_environment_setting_is_in_the_readme_table() -> None:
    code = "".join(p.read_text() for p in [ROOT / "marketstream" / "settings.py", ROOT / "marketstream" / "serve.py"])
    code += (ROOT / "marketstream" / "runtime.py").read_text()
    names = set(re.findall(r"""(?:environ\.get|env_int|env_float|env_bool)\(\s*["']([A-Z_]+)["']""", code))
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)`", readme, re.M)) | set(re.findall(r"`([A-Z_]+)`", readme))
    assert names - {"DJANGO_SETTINGS_MODULE"} <= documented, names - documented
