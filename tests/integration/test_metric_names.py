"""Every series that the Grafana dashboard, the alert rules and their unit tests name is one that
a real hub or a real feed exposes: a renamed metric breaks this test, not a dashboard in production.

The hub and the feed are started as the other integration tests start them; the hub is scraped on
GET /metrics, the feed on its `--metrics-port` listener. Names come from `# TYPE` lines, so a
labelled family counts before its first series (a close code nobody has seen yet).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from loadtest.services import free_port, wait_until
from tests.support.processes import READY_TIMEOUT, Processes, http_get
from tests.support.promql import exposed_names, metric_names
from tests.test_grafana import expressions, load

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "docker" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "docker" / "prometheus" / "alerts.test.yml"
PROMETHEUS_OWN = {"up", "ALERTS"}  # series Prometheus itself makes


def alert_expressions() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def alert_test_series() -> set[str]:
    """The series names the rules' unit tests feed in: a test on a made-up name would test nothing."""
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    return {s["series"].split("{")[0] for t in tests for s in t["input_series"]}


def scrape(port: int) -> str:
    status, kind, body = http_get(port, "/metrics")
    assert status == 200 and kind.startswith("text/plain"), f"GET /metrics on {port}: {status} {body[:300]}"
    return body


def test_the_dashboard_and_alerts_name_only_what_a_hub_or_feed_exposes(
    procs: Processes, prefix: str, redis_url: str
) -> None:
    hub = procs.hub(prefix, redis_url)
    metrics_port = free_port()
    feed = procs.feed(prefix, ["AAPL", "MSFT"], 50, "--metrics-port", str(metrics_port), redis_url=redis_url)
    wait_until(lambda: http_get(metrics_port, "/metrics")[0] == 200, READY_TIMEOUT, feed, "the feed's metrics")

    hub_names, feed_names = exposed_names(scrape(hub.port)), exposed_names(scrape(metrics_port))
    assert "marketstream_connections" in hub_names, "the hub's own families are there"
    assert "marketstream_feed_ticks_published_total" in feed_names, "the feed's own families are there"
    exposed = hub_names | feed_names | PROMETHEUS_OWN

    for what, exprs in (("the dashboard", expressions(load())), ("alerts.yml", alert_expressions())):
        for expr in exprs:
            unknown = metric_names(expr) - exposed
            assert not unknown, f"{what} names {sorted(unknown)}, which no hub or feed exposes: {expr}"
    unknown = alert_test_series() - exposed
    assert not unknown, f"alerts.test.yml feeds series no hub or feed exposes: {sorted(unknown)}"
