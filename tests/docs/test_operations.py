"""docs/operations.md documents every metric family that a real hub and a real feed expose,
with its type, and no family that neither exposes."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from loadtest.services import free_port
from tests.embedded import ROOT
from tests.support.processes import Processes, http_get

PAGE = ROOT / "docs" / "operations.md"
ROW = re.compile(r"^\| `(marketstream_\w+)`(?:\{[^}]*\})? \| (counter|gauge|histogram) \|", re.MULTILINE)


def exposed(port: int) -> dict[str, str]:
    """name as exposed (counters with `_total`) -> type, of GET /metrics on `port`."""
    status, _, text = http_get(port, "/metrics")
    assert status == 200, text
    found = {}
    for family in text_string_to_metric_families(text):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        found[name] = family.type
    return found


def documented() -> dict[str, str]:
    return dict(ROW.findall(PAGE.read_text()))


def test_every_metric_family_of_a_hub_and_a_feed_is_documented(procs: Processes, prefix: str) -> None:
    hub = procs.hub(prefix)
    port = free_port()
    procs.feed(prefix, ["AAPL", "MSFT"], 50, "--metrics-port", str(port))
    families = {**exposed(hub.port), **exposed(port)}
    assert any(n.startswith("marketstream_feed_") for n in families), families
    assert "marketstream_shard_up" in families and "marketstream_tick_latency_seconds" in families, families
    table = documented()
    missing = {n: t for n, t in families.items() if n not in table}
    assert not missing, f"exposed but not in the table of docs/operations.md: {missing}"
    wrong = {n: (t, table[n]) for n, t in families.items() if table[n] != t}
    assert not wrong, f"exposed type, documented type: {wrong}"
    stale = sorted(set(table) - set(families))
    assert not stale, f"documented in docs/operations.md but exposed by neither: {stale}"
