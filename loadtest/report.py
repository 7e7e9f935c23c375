"""The fan-out benchmark's numbers: from raw measurements to the result JSON, the
readable table, and the sweep plot.

Definitions (also in the result's ``definitions`` field):

- offered: ticks the feed published in the window (sum over symbols of the seq advance
  read from the catalog at both ends of the window), per second.
- wanted: what a perfect server would deliver in the window: sum over subscriptions of
  the ticks published for their symbol; with a throttle T, each subscription gets at most
  one tick per T (min(published, window / T)); that is an at-most-expected value, so
  the delivery ratio of a throttled run can be slightly below 1 for a perfect server.
- delivered: live ticks received by the clients in their window (snapshots excluded).
- latency: client receive time minus tick ``ts`` (ns since the epoch, stamped by the
  publisher), per tick, from a histogram with <= 10% bucket error (see streamcheck).
- hub CPU per delivered tick: user+sys CPU of the hub processes over the window divided
  by the delivered ticks. RSS per connection: (hub RSS at the end of the window - hub RSS
  before connecting) / connections.

With a restart (the recovery scenario), the window spans the reconnect storm and:

- delivered counts live and recovered ticks (a recovered tick is one the client missed
  and got after all); latency is of live ticks only;
- hub CPU is the old hub's (until it exited, shutdown included) plus the new hub's (from
  its start, Django startup included); RSS after is the new hub's;
- ``storm`` (times in seconds after the SIGTERM, monotonic clock shared by all processes):
  ``new_hub_ready_s`` (it accepts TCP connections), per client ``acked`` (its resubscribe with
  `since` acked) and ``live`` (its first live tick after the recovered frames);
  ``all_acked_s`` and ``all_live_s`` (None unless every client got there); recovered
  true/false counts from the acks; ``recovered_ticks``: ticks in recovered frames;
  ``new_hub_cpu_s``: the new hub's CPU from its start until it listens (``startup``) and until
  all live (``to_all_live``; when not every client got there, until the wait gave up);
  ``storm``: the difference, the cost of the reconnects,
  recovery and live fan-out meanwhile; ``storm_cpu_us_per_recovered_tick``: storm /
  recovered ticks; ``hub``: the new hub's own recovery counters (GET /metrics) when all
  were live (or the wait timed out) and at the end of the window (None: no answer), and
  the later of the two that answered (``latest``, in the table).
  ``lost`` (top level) covers the whole run, storm included.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from loadtest.scenarios import Scenario
from loadtest.streamcheck import Totals, percentiles


@dataclass
class Raw:
    """What one run measured, before any arithmetic."""

    variant: str  # "ours" or "baseline"
    encoding: str
    connected: int = 0
    connect_failed: int = 0
    subscribe_retries: int = 0
    first_error: str = ""
    connect_seconds: float = 0.0
    subscriptions: dict[str, int] = field(default_factory=dict)  # symbol -> connections subscribed
    window_s: float = 0.0
    published: dict[str, int] = field(default_factory=dict)  # symbol -> ticks published in the window
    reports: list[dict[str, Any]] = field(default_factory=list)  # one per client process
    hub_cpu_s: float | None = None
    feed_cpu_s: float | None = None
    rss_before: int | None = None
    rss_connected: int | None = None
    rss_after: int | None = None
    final_checked: int | None = None
    final_stale: int | None = None
    storm: dict[str, Any] | None = None  # a restart's measurements (fanout.storm)
    notes: list[str] = field(default_factory=list)


def _round(value: float | None, digits: int = 3) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return round(value, digits)


def summarize(scenario: Scenario, raw: Raw) -> dict[str, Any]:
    """The result of one run (a JSON-able dict); see the module docstring for definitions."""
    totals = Totals()
    for report in raw.reports:
        totals.merge(report)
    window = raw.window_s or float("nan")
    delivered_rate = sum(
        (r["ticks"] + r.get("recovered_ticks", 0)) / r["seconds"] for r in raw.reports if r["seconds"] > 0
    )
    frames_rate = sum(r["frames"] / r["seconds"] for r in raw.reports if r["seconds"] > 0)
    bars_rate = sum(r.get("bars", 0) / r["seconds"] for r in raw.reports if r["seconds"] > 0)
    bar_frames_rate = sum(r.get("bar_frames", 0) / r["seconds"] for r in raw.reports if r["seconds"] > 0)
    offered = sum(raw.published.values())
    if scenario.throttle:
        cap = window / (scenario.throttle / 1000)
        wanted = sum(n * min(raw.published.get(s, 0), cap) for s, n in raw.subscriptions.items())
    else:
        wanted = sum(n * raw.published.get(s, 0) for s, n in raw.subscriptions.items())
    wanted_rate = wanted / window
    pct = percentiles(totals.hist, (50, 90, 99))
    cpu_per_tick = raw.hub_cpu_s / totals.ticks if raw.hub_cpu_s is not None and totals.ticks else None
    rss_per_conn = None
    if raw.rss_after is not None and raw.rss_before is not None and raw.connected:
        rss_per_conn = (raw.rss_after - raw.rss_before) / raw.connected
    params = asdict(scenario) | {"encoding": raw.encoding}
    if params["restart"] is None:  # the other scenarios' output stays as it was
        del params["restart"]
    if not params["bars"]:
        del params["bars"]
    result: dict[str, Any] = {
        "variant": raw.variant,
        "scenario": params,
        "connections": raw.connected,
        "connect_failed": raw.connect_failed,
        "subscribe_retries": raw.subscribe_retries,
        "connect_seconds": _round(raw.connect_seconds, 2),
        "first_error": raw.first_error or None,
        "window_s": _round(raw.window_s, 2),
        "offered_ticks_per_s": _round(offered / window, 1),
        "wanted_ticks_per_s": _round(wanted_rate, 1),
        "delivered_ticks_per_s": _round(delivered_rate, 1),
        "delivery_ratio": _round(delivered_rate / wanted_rate if wanted_rate else None, 4),
        "frames_per_s": _round(frames_rate, 1),
        "ticks_per_frame": _round(
            delivered_rate / (frames_rate - bar_frames_rate) if frames_rate > bar_frames_rate else None, 2
        ),
        "latency_ms": {
            "p50": pct[50] / 1000,
            "p90": pct[90] / 1000,
            "p99": pct[99] / 1000,
            "max": totals.max_us / 1000,
        },
        "seq_violations": totals.seq_violations,
        "seq_gaps": totals.gaps,
        "conflated": totals.conflated,
        "lost": totals.lost,
        "overcounted": totals.overcounted,
        "throttle_violations": totals.throttle_violations if scenario.throttle else None,
        "throttle_tolerance_ms": scenario.throttle_tolerance_ms if scenario.throttle else None,
        "ends_on_latest": None
        if raw.final_checked is None
        else {"checked": raw.final_checked, "stale": raw.final_stale, "ok": raw.final_stale == 0},
        "disconnects": totals.disconnects,
        "error_frames": totals.errors,
        "hub_cpu_s": _round(raw.hub_cpu_s),
        "hub_cpu_cores": _round(raw.hub_cpu_s / window if raw.hub_cpu_s is not None else None),
        "hub_cpu_us_per_tick": _round(cpu_per_tick * 1e6 if cpu_per_tick is not None else None, 2),
        "feed_cpu_cores": _round(raw.feed_cpu_s / window if raw.feed_cpu_s is not None else None),
        "client_cpu_cores": _round(sum(r["cpu_s"] / r["seconds"] for r in raw.reports if r["seconds"] > 0)),
        "hub_rss_mb": {
            "before": _round(raw.rss_before / 2**20 if raw.rss_before is not None else None, 1),
            "connected": _round(raw.rss_connected / 2**20 if raw.rss_connected is not None else None, 1),
            "after": _round(raw.rss_after / 2**20 if raw.rss_after is not None else None, 1),
        },
        "hub_rss_kb_per_connection": _round(rss_per_conn / 1024 if rss_per_conn is not None else None, 2),
        "notes": raw.notes,
    }
    if scenario.bars:  # frames_per_s counts the bars frames too
        result["bars_per_s"] = _round(bars_rate, 1)
        result["bar_frames_per_s"] = _round(bar_frames_rate, 1)
    if raw.storm is not None:
        result["storm"] = summarize_storm(raw.storm, raw.connected)
    return result


def _nearest_rank(ordered: Sequence[float], p: float) -> float | None:
    if not ordered:
        return None
    return ordered[max(0, min(len(ordered) - 1, math.ceil(len(ordered) * p / 100) - 1))]


HUB_COUNTERS = ("recoveries_served", "recoveries_refused", "ticks_recovered", "history_reads", "ticks_lost")


def _hub_counters(metrics: Mapping[str, float] | None) -> dict[str, int] | None:
    """The new hub's recovery counters from its /metrics (None when it did not answer)."""
    if not metrics:
        return None
    return {name: int(metrics[f"marketstream_{name}"]) for name in HUB_COUNTERS if f"marketstream_{name}" in metrics}


def summarize_storm(storm: Mapping[str, Any], connected: int) -> dict[str, Any]:
    """The ``storm`` section of a result (see the module docstring)."""
    t0 = storm["restart_at"]
    times = [t for process in storm["clients"] for t in process["times"]]
    acked = sorted(a - t0 for _, a, _ in times if a is not None)
    live = sorted(v - t0 for _, _, v in times if v is not None)
    final = storm.get("final") or storm["clients"]
    closes: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    for process in final:
        closes.update({int(code): n for code, n in process["closes"].items()})
        errors.update(process.get("errors", {}))

    def total(name: str) -> int:
        return sum(int(process[name]) for process in final)

    recovered_ticks = total("recovered_ticks")
    startup, to_live = storm["new_hub_startup_cpu_s"], storm["new_hub_cpu_to_all_live_s"]
    cost = to_live - startup
    at_live, at_end = _hub_counters(storm.get("hub_metrics")), _hub_counters(storm.get("hub_metrics_end"))
    hub = {"at_all_live": at_live, "at_end": at_end, "latest": at_end or at_live}
    return {
        "clients": connected,
        "closed": total("closed"),
        "closes": {str(code): n for code, n in sorted(closes.items())},
        "closed_1012": closes.get(1012, 0),
        "reconnected": total("acked"),
        "live": total("live"),
        "reconnect_attempts": total("attempts"),
        "failed_attempts": total("failed"),
        "first_error": next((p["first_error"] for p in final if p["first_error"]), None),
        "failed_by_kind": dict(errors.most_common()),
        "old_hub_exit_code": storm.get("old_hub_exit_code"),
        "old_hub_stopped_s": _round(storm["old_hub_stopped_s"]),
        "new_hub_ready_s": _round(storm["new_hub_ready_s"]),
        "first_acked_s": _round(acked[0]) if acked else None,
        "all_acked_s": _round(acked[-1]) if acked and len(acked) >= connected else None,
        "all_live_s": _round(live[-1]) if live and len(live) >= connected else None,
        "live_s": {f"p{p}": _round(_nearest_rank(live, p)) for p in (50, 90, 99)},
        "live_within_s": {str(t): sum(1 for v in live if v <= t) for t in (1, 2, 5, 10, 20, 30, 60)},
        "recovered_true": total("recovered_true"),
        "recovered_false": total("recovered_false"),
        "refused": [r for p in final for r in p["refused"]][:10],
        "recovered_frames": total("recovered_frames"),
        "recovered_ticks": recovered_ticks,
        "snapshot_ticks": total("snapshot_ticks"),
        "old_hub_shutdown_cpu_s": _round(storm.get("old_hub_shutdown_cpu_s")),
        "new_hub_cpu_s": {"startup": _round(startup), "to_all_live": _round(to_live), "storm": _round(cost)},
        "storm_cpu_us_per_recovered_tick": _round(cost / recovered_ticks * 1e6, 2) if recovered_ticks else None,
        "hub": hub,
    }


def cpu_ratio(ours: Mapping[str, Any], baseline: Mapping[str, Any]) -> float | None:
    """Hub CPU per delivered tick, baseline / ours (how many times cheaper ours is)."""
    a, b = ours.get("hub_cpu_us_per_tick"), baseline.get("hub_cpu_us_per_tick")
    return _round(b / a, 2) if a and b else None


ROWS: list[tuple[str, str]] = [
    ("connections", "connections"),
    ("offered ticks/s", "offered_ticks_per_s"),
    ("wanted ticks/s", "wanted_ticks_per_s"),
    ("delivered ticks/s", "delivered_ticks_per_s"),
    ("delivery ratio", "delivery_ratio"),
    ("frames/s", "frames_per_s"),
    ("ticks/frame", "ticks_per_frame"),
    ("latency p50 ms", "latency_ms.p50"),
    ("latency p90 ms", "latency_ms.p90"),
    ("latency p99 ms", "latency_ms.p99"),
    ("latency max ms", "latency_ms.max"),
    ("seq violations", "seq_violations"),
    ("seq gaps", "seq_gaps"),
    ("  of them conflated", "conflated"),
    ("  of them lost", "lost"),
    ("conflated overcounted", "overcounted"),
    ("throttle violations", "throttle_violations"),
    ("ends on latest (stale)", "ends_on_latest.stale"),
    ("disconnects", "disconnects"),
    ("hub CPU cores", "hub_cpu_cores"),
    ("hub CPU us/tick", "hub_cpu_us_per_tick"),
    ("hub RSS KB/conn", "hub_rss_kb_per_connection"),
    ("client CPU cores", "client_cpu_cores"),
]

BAR_ROWS: list[tuple[str, str]] = [
    ("bars/s", "bars_per_s"),
    ("bar frames/s", "bar_frames_per_s"),
]

STORM_ROWS: list[tuple[str, str]] = [
    ("storm: clients closed", "storm.closed"),
    ("  closed with 1012", "storm.closed_1012"),
    ("  reconnected (acked)", "storm.reconnected"),
    ("  live again", "storm.live"),
    ("  reconnect attempts", "storm.reconnect_attempts"),
    ("  failed attempts", "storm.failed_attempts"),
    ("  old hub stopped s", "storm.old_hub_stopped_s"),
    ("  new hub ready s", "storm.new_hub_ready_s"),
    ("  first acked s", "storm.first_acked_s"),
    ("  all acked s", "storm.all_acked_s"),
    ("  all live s", "storm.all_live_s"),
    ("  live p50 s", "storm.live_s.p50"),
    ("  live p99 s", "storm.live_s.p99"),
    ("  live within 5 s", "storm.live_within_s.5"),
    ("  live within 30 s", "storm.live_within_s.30"),
    ("  recovered true", "storm.recovered_true"),
    ("  recovered false", "storm.recovered_false"),
    ("  ticks recovered", "storm.recovered_ticks"),
    ("  recovered frames", "storm.recovered_frames"),
    ("  hub: recoveries served", "storm.hub.latest.recoveries_served"),
    ("  hub: recoveries refused", "storm.hub.latest.recoveries_refused"),
    ("  hub: ticks recovered", "storm.hub.latest.ticks_recovered"),
    ("  hub: history reads", "storm.hub.latest.history_reads"),
    ("  new hub CPU s startup", "storm.new_hub_cpu_s.startup"),
    ("  new hub CPU s to all live", "storm.new_hub_cpu_s.to_all_live"),
    ("  storm CPU s", "storm.new_hub_cpu_s.storm"),
    ("  storm CPU us/recovered tick", "storm.storm_cpu_us_per_recovered_tick"),
]


def _get(result: Mapping[str, Any], path: str) -> Any:
    value: Any = result
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(title: str, results: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table: one row per metric, one column per result (by variant)."""
    headers = ["", *[str(r.get("variant")) for r in results]]
    paths = ROWS + (BAR_ROWS if any("bars_per_s" in r for r in results) else [])
    paths += STORM_ROWS if any("storm" in r for r in results) else []
    rows = [[label, *[_fmt(_get(r, path)) for r in results]] for label, path in paths]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = [
        title,
        "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True))),
    ]
    lines += [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    ]
    return "\n".join(lines)


def plot(path: str, points: Sequence[Mapping[str, Any]]) -> str | None:
    """Latency (p50, p99) and delivered rate against offered rate, one line per variant.
    Returns None when written, else why not (matplotlib missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'marketstream[plot]'); no plot written"
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for variant in sorted({p["variant"] for p in points}):
        mine = sorted((p for p in points if p["variant"] == variant), key=lambda p: p["offered_ticks_per_s"] or 0)
        x = [p["offered_ticks_per_s"] for p in mine]
        left.plot(x, [p["latency_ms"]["p50"] for p in mine], "o-", label=f"{variant} p50")
        left.plot(x, [p["latency_ms"]["p99"] for p in mine], "s--", label=f"{variant} p99")
        right.plot(x, [p["delivered_ticks_per_s"] for p in mine], "o-", label=f"{variant} delivered")
        right.plot(x, [p["wanted_ticks_per_s"] for p in mine], ":", label=f"{variant} wanted")
    left.set(xlabel="offered ticks/s", ylabel="latency (ms)", yscale="log", title="end-to-end latency")
    right.set(xlabel="offered ticks/s", ylabel="ticks/s", title="delivered rate")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
