"""Who may import whom (docs/design.md, "Architecture"): a test keeps the picture true.

Every import statement anywhere in a module counts, including those inside functions.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("django", "channels", "channels_redis", "redis", "uvicorn", "asgiref", "daphne")
# what the client library may import beyond the standard library: its documented dependencies
# (rich only for the terminal client, imported where the table is drawn)
CLIENT_DEPENDENCIES = ("websockets", "msgpack", "rich")

# part -> (what it is, the parts of ours it may import); "project" is marketstream/ outside core and adapters
RULES: dict[str, tuple[str, set[str]]] = {
    "core": ("marketstream/core", {"core"}),
    "client": ("marketstream/client", {"client"}),
    "adapters": ("marketstream/adapters", {"core", "adapters"}),
    "consumers": ("consumers", {"core", "adapters", "consumers"}),
    "feeds": ("feeds", {"core", "adapters", "feeds"}),
    "project": ("marketstream", {"core", "adapters", "consumers", "feeds", "project"}),
    "loadtest": ("loadtest", {"core", "adapters", "client", "consumers", "feeds", "project", "loadtest"}),
}


def part_of(module: str) -> str | None:
    """The part a dotted module name belongs to, or None for a module not of ours."""
    top = module.split(".")[0]
    if module.startswith("marketstream.core"):
        return "core"
    if module.startswith("marketstream.adapters"):
        return "adapters"
    if module.startswith("marketstream.client"):
        return "client"
    if top == "marketstream":
        return "project"
    if top in ("consumers", "feeds", "loadtest", "tests"):
        return top
    return None


def imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def modules(part: str) -> list[Path]:
    folder = ROOT / RULES[part][0]
    files = sorted(folder.rglob("*.py"))
    if part == "project":
        files = [f for f in files if not f.is_relative_to(ROOT / "marketstream/core")]
        files = [f for f in files if not f.is_relative_to(ROOT / "marketstream/adapters")]
        files = [f for f in files if not f.is_relative_to(ROOT / "marketstream/client")]
    return files


@pytest.mark.parametrize("part", list(RULES))
def test_imports_point_one_way(part: str) -> None:
    allowed = RULES[part][1]
    files = modules(part)
    assert files, f"no modules found for {part}"
    wrong = []
    for path in files:
        for line, module in imports(path):
            other = part_of(module)
            if other is not None and other not in allowed:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module} ({part} may import {sorted(allowed)})")
    assert not wrong, "\n".join(wrong)


def test_the_core_imports_no_framework() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in modules("core")
        for line, module in imports(path)
        if module.split(".")[0] in FRAMEWORKS
    ]
    assert not wrong, "marketstream/core must not import Django, Channels, Redis or uvicorn:\n" + "\n".join(wrong)


def test_the_client_imports_only_its_dependencies() -> None:
    """marketstream.client is installed and used apart from the hub: the standard library,
    websockets and msgpack (and rich for the terminal), nothing else."""
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in modules("client")
        for line, module in imports(path)
        if part_of(module) is None
        and module.split(".")[0] not in sys.stdlib_module_names
        and module.split(".")[0] not in CLIENT_DEPENDENCIES
    ]
    assert not wrong, "marketstream/client may import websockets, msgpack and rich only:\n" + "\n".join(wrong)


def test_the_client_loads_alone() -> None:
    """Importing the client (and running its command's help) loads no framework and
    nothing of ours but itself: not even marketstream's settings."""
    code = (
        "import sys, marketstream.client, marketstream.client.__main__\n"
        "ours = ('consumers', 'feeds', 'loadtest', 'tests')\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in ours + {FRAMEWORKS!r} + ('orjson', 'rich')\n"
        "             or (m.startswith('marketstream.') and not m.startswith('marketstream.client')))\n"
        "print(bad)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", f"the client loaded {run.stdout.strip()}"


def test_the_rule_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from consumers.consumer import StreamConsumer\n    import django\n")
    found = [(part_of(m), m) for _, m in imports(bad)]
    assert found == [("consumers", "consumers.consumer"), (None, "django")]
