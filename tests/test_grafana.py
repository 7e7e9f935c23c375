"""docker/grafana/dashboards/marketstream.json: a dashboard Grafana can load, whose every panel
queries Prometheus (the provisioned data source) and which shows what operators need.

Grafana does not run here; what a real hub and feed expose is checked against these names in
tests/integration/test_metric_names.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.promql import exposed_names, metric_names

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "marketstream.json"
DATASOURCES = ROOT / "docker" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
# what the dashboard must show (issue 12): a series of each of these families
SHOWN = {
    "connections": "marketstream_connections",
    "delivery: ticks": "marketstream_ticks_sent_total",
    "delivery: frames": "marketstream_frames_sent_total",
    "delivery: bytes": "marketstream_bytes_sent_total",
    "latency percentiles": "marketstream_tick_latency_seconds_bucket",
    "conflation": "marketstream_ticks_conflated_total",
    "loss": "marketstream_ticks_lost_total",
    "resets": "marketstream_resets_total",
    "recoveries": "marketstream_recoveries_served_total",
    "recoveries refused": "marketstream_recoveries_refused_total",
    "closes by code": "marketstream_closes_total",
    "rejected requests": "marketstream_requests_rejected_total",
    "handshakes": "marketstream_handshakes_total",
    "shard health": "marketstream_shard_up",
    "feed publish rate": "marketstream_feed_ticks_published_total",
    "feed lag": "marketstream_feed_lag_seconds",
}


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (rows are containers), also those inside collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out += panel.get("panels", []) if panel["type"] == "row" else [panel]
    return out


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panels, template variables, annotations."""
    exprs = [t["expr"] for p in panels(dashboard) for t in p["targets"]]
    exprs += [v["definition"].removeprefix("label_values(").rsplit(",", 1)[0] for v in dashboard["templating"]["list"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    return exprs


def test_every_panel_queries_the_provisioned_prometheus() -> None:
    dashboard = load()
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert dashboard["uid"] and dashboard["title"]
    assert len(panels(dashboard)) >= 12
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{panel['title']}: an empty query"
            assert metric_names(target["expr"]), f"{panel['title']}: {target['expr']} selects no series"
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_the_dashboard_shows_what_operators_need() -> None:
    named = set().union(*map(metric_names, expressions(load())))
    missing = {what: name for what, name in SHOWN.items() if name not in named}
    assert not missing, f"the dashboard does not show {missing}"


def test_latency_percentiles_come_from_the_histogram() -> None:
    exprs = expressions(load())
    quantiles = [e for e in exprs if "marketstream_tick_latency_seconds_bucket" in e]
    assert {e.split(",")[0] for e in quantiles} >= {
        "histogram_quantile(0.5",
        "histogram_quantile(0.9",
        "histogram_quantile(0.99",
    }
    assert all("by (le)" in e for e in quantiles), quantiles


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (instance) (marketstream_connections{job="marketstream-hub", instance=~"$instance"})',
         {"marketstream_connections"}),
        ("histogram_quantile(0.99, sum by (le) (rate(marketstream_tick_latency_seconds_bucket{a=\"b\"}[$__rate_interval])))",  # noqa: E501
         {"marketstream_tick_latency_seconds_bucket"}),
        ('min by (job, instance, shard) (a_up) == 0\nor min by (job, instance, shard) (b_up) == 0', {"a_up", "b_up"}),
        ("sum(rate(x_total[5m])) by (code) / ignoring(code) group_left sum(rate(y_total[5m])) > 1e3",
         {"x_total", "y_total"}),
        ("up{job=~\"marketstream-(hub|feed)\"} == 0 unless on (instance) z offset 1h", {"up", "z"}),
        ('ALERTS{alertname=~"Marketstream.*", alertstate="firing"}', {"ALERTS"}),
        ("max_over_time(q:recorded[1m:10s]) and bool inf", {"q:recorded"}),
    ],
)  # fmt: skip
def test_metric_names_finds_every_series_of_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_exposed_names_counts_families_without_series() -> None:
    text = (
        "# HELP a_total Things\n# TYPE a_total counter\n"
        "# HELP b Things\n# TYPE b counter\nb_total 3.0\nb_created 1.7e9\n"
        '# TYPE h histogram\nh_bucket{le="+Inf"} 1.0\nh_count 1.0\nh_sum 0.1\n'
        '# TYPE g gauge\ng{shard="0"} 1.0\n'
    )
    assert exposed_names(text) == {"a_total", "b_total", "b_created", "h_bucket", "h_sum", "h_count", "g"}
