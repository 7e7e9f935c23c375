"""The docs say what the code does: the client example runs as written, every setting is documented."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.embedded import ROOT


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


CLIENT_EXPECTS = [  # for each python block of docs/client.md, what its output must contain
    ["subscribed: ('AAPL', 'EUR/USD')", "snapshot: True", "conflated:", "gaps: 0"],
    ["connection: Connected(", "1s bar"],
    ["MSFT seqs: ["],
    ["{'AAPL': 0, 'MSFT': 0}"],
]


def test_the_client_page_examples_run_as_written(embedded_hub: int, tmp_path: Path) -> None:
    blocks = python_blocks((ROOT / "docs" / "client.md").read_text())
    assert len(blocks) == len(CLIENT_EXPECTS), "an example was added or removed: say what it prints"
    for n, (block, expected) in enumerate(zip(blocks, CLIENT_EXPECTS, strict=True)):
        script = tmp_path / f"client_{n}.py"
        script.write_text(block.replace("127.0.0.1:8000", f"127.0.0.1:{embedded_hub}"))
        run = subprocess.run([sys.executable, "-u", str(script)], capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert run.returncode == 0, f"example {n + 1} failed:\n{block}\n{run.stdout}\n{run.stderr}"
        for text in expected:
            assert text in run.stdout, f"example {n + 1} did not print {text!r}:\n{run.stdout}"


def test_the_landing_page_is_served(embedded_hub: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{embedded_hub}/", timeout=5) as r:
        page = r.read().decode()
    assert "marketstream" in page and "/ws/v1/stream" in page


def test_every_environment_setting_is_in_the_readme_table() -> None:
    code = "".join(p.read_text() for p in [ROOT / "marketstream" / "settings.py", ROOT / "marketstream" / "serve.py"])
    code += (ROOT / "marketstream" / "wiring.py").read_text()
    names = set(re.findall(r"""(?:environ\.get|env_int|env_float|env_bool)\(\s*["']([A-Z_]+)["']""", code))
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)`", readme, re.M)) | set(re.findall(r"`([A-Z_]+)`", readme))
    assert names - {"DJANGO_SETTINGS_MODULE"} <= documented, names - documented
