"""Who may import whom (docs/design.md, "Architecture"): a test keeps the picture true.

Every import statement anywhere in a module counts, including those inside functions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("django", "channels", "channels_redis", "redis", "uvicorn", "asgiref", "daphne")

# part -> (what it is, the parts of ours it may import); "project" is marketstream/ outside core and adapters
RULES: dict[str, tuple[str, set[str]]] = {
    "core": ("marketstream/core", {"core"}),
    "adapters": ("marketstream/adapters", {"core", "adapters"}),
    "consumers": ("consumers", {"core", "adapters", "consumers"}),
    "feeds": ("feeds", {"core", "adapters", "feeds"}),
    "project": ("marketstream", {"core", "adapters", "consumers", "feeds", "project"}),
    "loadtest": ("loadtest", {"core", "adapters", "consumers", "feeds", "project", "loadtest"}),
}


def part_of(module: str) -> str | None:
    """The part a dotted module name belongs to, or None for a module not of ours."""
    top = module.split(".")[0]
    if module.startswith("marketstream.core"):
        return "core"
    if module.startswith("marketstream.adapters"):
        return "adapters"
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


def test_the_rule_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from consumers.consumer import StreamConsumer\n    import django\n")
    found = [(part_of(m), m) for _, m in imports(bad)]
    assert found == [("consumers", "consumers.consumer"), (None, "django")]
