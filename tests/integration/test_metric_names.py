"""Every series that the Grafana dashboard, the alert rules and their unit tests name is one that
a real hub or a real feed exposes: a renamed metric breaks this test, not a dashboard in production.

The hub and the feed are started as the other integration tests start them; the hub is scraped on
GET /metrics, the feed on its `--metrics-port` listener. Names come from `# TYPE` lines, so a
labelled family counts before its first series. Labels are checked too: each label that a
selector matches or an aggregation groups by is one those series carry (`code`, `reason`,
`shard`...), and a value matched with `=` is one they take (the hub shows every close code and
refusal reason from the start, at 0), beside `job` and `instance`, which Prometheus adds, and
`le`, the histogram buckets'.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from loadtest.services import delete_prefix, free_port, wait_until
from tests.support.processes import READY_TIMEOUT, Processes, http_get, unique_prefix
from tests.support.promql import exposed_names, exposed_series, grouping_labels, metric_names, selectors
from tests.test_grafana import expressions, load

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "docker" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "docker" / "prometheus" / "alerts.test.yml"
PROMETHEUS_OWN = {"up", "ALERTS"}  # series Prometheus itself makes
TARGET_LABELS = {"job", "instance"}  # labels Prometheus adds to every scraped series
ALERT_LABELS = {"alertname", "alertstate"}


@dataclass
class Exposed:
    """What a real hub and a real feed answer on /metrics."""

    names: set[str]
    series: dict[str, list[dict[str, str]]]

    def labels_of(self, name: str) -> set[str]:
        return {label for labels in self.series.get(name, []) for label in labels}


def scrape(port: int) -> str:
    status, kind, body = http_get(port, "/metrics")
    assert status == 200 and kind.startswith("text/plain"), f"GET /metrics on {port}: {status} {body[:300]}"
    return body


@pytest.fixture(scope="module")
def exposed(redis_url: str) -> Iterator[Exposed]:
    prefix = unique_prefix("metric-names")
    procs = Processes()
    try:
        hub = procs.hub(prefix, redis_url)
        port = free_port()
        feed = procs.feed(prefix, ["AAPL", "MSFT"], 50, "--metrics-port", str(port), redis_url=redis_url)
        wait_until(lambda: http_get(port, "/metrics")[0] == 200, READY_TIMEOUT, feed, "the feed's metrics")
        hub_text, feed_text = scrape(hub.port), scrape(port)
        hub_names, feed_names = exposed_names(hub_text), exposed_names(feed_text)
        assert "marketstream_connections" in hub_names, "the hub's own families are there"
        assert "marketstream_feed_ticks_published_total" in feed_names, "the feed's own families are there"
        yield Exposed(hub_names | feed_names | PROMETHEUS_OWN, exposed_series(hub_text) | exposed_series(feed_text))
    finally:
        procs.stop_all()
        procs.remove_logs()
        delete_prefix(redis_url, prefix)


def naming_problems(expr: str, exposed: Exposed, values: bool = True) -> list[str]:
    """What `expr` names (series, labels, and with `values` label values matched with `=`) that
    the hub and feed do not expose."""
    names = metric_names(expr)
    problems = [f"{n}: no hub or feed exposes it" for n in sorted(names - exposed.names)]
    carried = set().union(*map(exposed.labels_of, names)) | TARGET_LABELS | {"le"}
    if "ALERTS" in names:
        carried |= ALERT_LABELS
    problems += [f"grouped by {label}, which {sorted(names)} do not carry" for label in grouping_labels(expr) - carried]
    for name, matchers in selectors(expr):
        for label, op, value in matchers:
            if name in PROMETHEUS_OWN or label in TARGET_LABELS or name not in exposed.names:
                continue
            if label not in exposed.labels_of(name):
                problems.append(f"{name} has no label {label}")
                continue
            taken = {labels.get(label) for labels in exposed.series[name]}
            if values and op == "=" and value not in taken:
                problems.append(f"{name}{{{label}}} is never {value!r} (only {sorted(map(str, taken))})")
    return problems


def alert_expressions() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def test_the_dashboard_and_alerts_name_only_what_a_hub_or_feed_exposes(exposed: Exposed) -> None:
    for what, exprs in (("the dashboard", expressions(load())), ("alerts.yml", alert_expressions())):
        for expr in exprs:
            assert naming_problems(expr, exposed) == [], f"{what}: {expr}"


def test_the_alert_unit_tests_feed_series_a_hub_or_feed_exposes(exposed: Exposed) -> None:
    """A unit test of a rule on a made-up series would test nothing. (Its label values may be
    ones a one-shard test hub does not have: shard "1".)"""
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    for series in (s["series"] for t in tests for s in t["input_series"]):
        assert naming_problems(series, exposed, values=False) == [], series


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(marketstream_ticks_sent[5m])", "marketstream_ticks_sent: no hub or feed exposes it"),
        ("marketstream_feed_lag", "marketstream_feed_lag: no hub or feed exposes it"),
        ('sum by (code) (rate(marketstream_closes_total{code="1014"}[5m]))', "is never '1014'"),
        ('rate(marketstream_recoveries_refused_total{why="too_old"}[5m])', "has no label why"),
        ("sum by (outcome) (rate(marketstream_closes_total[5m]))", "grouped by outcome"),
        ("min by (shard) (marketstream_connections)", "grouped by shard"),
    ],
)
def test_a_wrong_name_label_or_value_is_caught(exposed: Exposed, expr: str, problem: str) -> None:
    assert any(problem in p for p in naming_problems(expr, exposed)), naming_problems(expr, exposed)
