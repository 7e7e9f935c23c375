"""The dashboard's files (marketstream/static/): the vendored libraries are the ones listed in
SHA256SUMS, and the page preloads exactly the modules its first script imports."""

from __future__ import annotations

import hashlib
import posixpath
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "marketstream" / "static"
VENDOR = STATIC / "vendor"
TEMPLATE = ROOT / "marketstream" / "templates" / "index.html"
# static imports: `import x from "./y.js"`, `import { a } from "../z.mjs"`, `export { b } from "./w.mjs"`
IMPORT = re.compile(
    r"""^\s*(?:import|export)\b[^"'()]*?\bfrom\s*["']([^"']+)["']|^\s*import\s*["']([^"']+)["']""", re.M
)


def test_the_vendored_files_match_their_checked_in_hashes() -> None:
    listed = {}
    for line in (VENDOR / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name] = digest
    present = {
        str(p.relative_to(VENDOR))
        for p in VENDOR.rglob("*")
        if p.is_file() and p.name not in ("SHA256SUMS", "README.md")
    }
    assert present == set(listed), "every vendored file is listed, and every listed file is there (make vendor)"
    for name, digest in listed.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, f"{name} changed: run `make vendor`"
    assert (VENDOR / "lightweight-charts" / "LICENSE").exists() and (VENDOR / "msgpack" / "LICENSE").exists()


def static_graph(entry: str) -> set[str]:
    """Every module `entry` (a path under static/) imports statically, itself included."""
    seen: set[str] = set()
    todo = [entry]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for match in IMPORT.finditer((STATIC / module).read_text()):
            target = match.group(1) or match.group(2)
            todo.append(posixpath.normpath(posixpath.join(posixpath.dirname(module), target)))
    return seen


def test_the_page_preloads_every_module_of_its_first_script() -> None:
    preloaded = set(re.findall(r"""<link rel="modulepreload" href="\{% static '([^']+)' %\}">""", TEMPLATE.read_text()))
    graph = static_graph("dashboard/main.js")
    assert "dashboard/chart.js" not in graph, "the chart's library loads after the stream has started"
    assert "dashboard/codec.js" in graph
    assert preloaded == graph, f"index.html: preload {sorted(graph - preloaded)}, not {sorted(preloaded - graph)}"
