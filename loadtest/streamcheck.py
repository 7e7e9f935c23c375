"""What a load-test client checks and counts in the tick stream it receives. No I/O.

Shared by the locust user (gevent) and the fan-out benchmark's client processes (asyncio):
both hand every `ticks`/`snapshot` frame of a connection to that connection's
`StreamCheck`, which updates a `Totals` shared by many connections.

Checks (PROTOCOL.md, Semantics):

- seq: per symbol, the seq one connection sees must strictly increase, across
  `snapshot` and `ticks` frames. A tick whose seq is not above the last one seen is a
  *seq violation*; a jump of more than one is a *gap* (ticks conflated or lost), counted
  as the number of ticks skipped.
- accounting: a tick carries `conflated`, the ticks it stands in for, so each gap splits
  into conflated and *lost* (`seq - previous - 1 - conflated`, ticks lost before the hub:
  0 in normal operation). A `conflated` larger than the gap is *overcounted* (a hub bug).
  After a `reset` frame a symbol's accounting starts again (`reset`).
- throttle: with `throttle_ms > 0`, two ticks of one symbol received on one connection
  closer than ``throttle_ms - tolerance_ms`` apart (client receive time, monotonic clock)
  are a *throttle violation*. The tolerance absorbs client-side scheduling jitter: a frame
  read late by a busy client makes the next gap look shorter than the server made it.

Latency is receive time (wall clock, ns) minus the tick's `ts`, recorded for live ticks
only (a snapshot tick is old by design) in a histogram with at most 10% relative error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def latency_bucket(us: int) -> int:
    """The histogram bucket of a latency in microseconds: its upper bound, in microseconds.

    Buckets are 10 us wide below 1 ms, 100 us below 10 ms, 1 ms below 100 ms, 10 ms below
    1 s and 100 ms above, so a percentile read from the buckets overstates the true
    value by at most one bucket width (at most 10% of it, or 10 us).
    """
    if us < 1_000:
        return (us // 10 + 1) * 10 if us >= 0 else 10
    if us < 10_000:
        return (us // 100 + 1) * 100
    if us < 100_000:
        return (us // 1_000 + 1) * 1_000
    if us < 1_000_000:
        return (us // 10_000 + 1) * 10_000
    return (us // 100_000 + 1) * 100_000


def percentiles(hist: Mapping[int, int], points: Iterable[float]) -> dict[float, float]:
    """Percentiles (0-100) of a bucket histogram, in microseconds (bucket upper bounds).

    Returns 0.0 for every point when the histogram is empty.
    """
    total = sum(hist.values())
    points = list(points)
    if total == 0:
        return {p: 0.0 for p in points}
    ordered = sorted(hist.items())
    result: dict[float, float] = {}
    for p in points:
        rank = max(1, round(total * p / 100))
        seen = 0
        for bucket, count in ordered:
            seen += count
            if seen >= rank:
                result[p] = float(bucket)
                break
    return result


class Totals:
    """Counters over many connections. Window counters restart with `reset_window`;
    violation counters cover the whole run (a violation is a bug whenever it happens)."""

    WINDOW = ("ticks", "frames", "bytes", "gaps", "conflated", "snapshot_ticks", "bars", "bar_frames")
    RUN = ("seq_violations", "throttle_violations", "lost", "overcounted", "disconnects", "errors")

    def __init__(self) -> None:
        self.ticks = 0  # live ticks received
        self.frames = 0  # data frames received (any type)
        self.bytes = 0  # payload bytes of those frames
        self.gaps = 0  # ticks skipped (seq jumps): conflated + lost
        self.conflated = 0  # ticks skipped that the hub accounted for as conflated
        self.snapshot_ticks = 0
        self.bars = 0  # bars received (in `bars` frames)
        self.bar_frames = 0  # `bars` frames received (counted in `frames` too)
        self.lost = 0  # ticks skipped that nobody accounted for (lost before the hub)
        self.overcounted = 0  # `conflated` beyond the gap it stands for
        self.seq_violations = 0
        self.throttle_violations = 0
        self.disconnects = 0  # connections closed by the server or lost
        self.errors = 0  # `error` frames received
        self.hist: dict[int, int] = {}
        self.max_us = 0

    def reset_window(self) -> None:
        """Start a measurement window: zero the window counters and the latency histogram."""
        for name in self.WINDOW:
            setattr(self, name, 0)
        self.hist = {}
        self.max_us = 0

    def as_dict(self) -> dict[str, Any]:
        """Counters and histogram, picklable and JSON-able (histogram keys become strings in JSON)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in self.WINDOW + self.RUN}
        data["hist"] = dict(self.hist)
        data["max_us"] = self.max_us
        return data

    def merge(self, data: Mapping[str, Any]) -> None:
        """Add counters produced by `as_dict` (of another process, or a delta)."""
        for name in self.WINDOW + self.RUN:
            setattr(self, name, getattr(self, name) + int(data.get(name, 0)))
        hist = self.hist
        for bucket, count in data.get("hist", {}).items():
            key = int(bucket)
            hist[key] = hist.get(key, 0) + int(count)
        self.max_us = max(self.max_us, int(data.get("max_us", 0)))


class StreamCheck:
    """The checks of one connection. `throttle_ms` is the effective throttle from the ack."""

    __slots__ = ("last_at", "last_seq", "min_gap_ns", "throttle_ms", "totals", "violations")

    def __init__(self, totals: Totals, throttle_ms: int = 0, tolerance_ms: float = 20.0) -> None:
        self.totals = totals
        self.last_seq: dict[str, int] = {}
        self.last_at: dict[str, int] = {}
        self.throttle_ms = 0
        self.min_gap_ns = 0
        self.violations: list[str] = []  # descriptions of recent violations, for reports; bounded
        self.set_throttle(throttle_ms, tolerance_ms)

    def set_throttle(self, throttle_ms: int, tolerance_ms: float = 20.0) -> None:
        self.throttle_ms = throttle_ms
        self.min_gap_ns = int(max(0.0, throttle_ms - tolerance_ms) * 1_000_000) if throttle_ms > 0 else 0

    def ticks(self, ticks: list[dict[str, Any]], recv_ns: int, mono_ns: int, snapshot: bool = False) -> int:
        """Check and count the ticks of one frame received at `recv_ns` (wall clock) and
        `mono_ns` (monotonic). Returns the frame's largest latency in microseconds (0 for
        a snapshot)."""
        totals = self.totals
        last_seq = self.last_seq
        worst = 0
        for tick in ticks:
            symbol = tick["symbol"]
            seq = tick["seq"]
            prev = last_seq.get(symbol, 0)
            if seq <= prev:
                totals.seq_violations += 1
                if len(self.violations) < 20:
                    self.violations.append(f"{symbol}: seq {seq} after {prev}")
            else:
                merged = tick.get("conflated", 0)
                if prev:
                    skipped = seq - prev - 1
                    totals.gaps += skipped
                    totals.conflated += merged
                    if merged > skipped:
                        totals.overcounted += merged - skipped
                        if len(self.violations) < 20:
                            self.violations.append(f"{symbol}: seq {seq} after {prev} with conflated {merged}")
                    else:
                        totals.lost += skipped - merged
                last_seq[symbol] = seq
            if self.min_gap_ns:
                before = self.last_at.get(symbol)
                if before is not None and mono_ns - before < self.min_gap_ns:
                    totals.throttle_violations += 1
                    if len(self.violations) < 20:
                        self.violations.append(f"{symbol}: {(mono_ns - before) / 1e6:.1f} ms after the previous tick")
                self.last_at[symbol] = mono_ns
            if not snapshot:
                us = (recv_ns - tick["ts"]) // 1000
                if us > worst:
                    worst = us
                bucket = latency_bucket(us)
                totals.hist[bucket] = totals.hist.get(bucket, 0) + 1
        if snapshot:
            totals.snapshot_ticks += len(ticks)
        else:
            totals.ticks += len(ticks)
            if worst > totals.max_us:
                totals.max_us = worst
        return worst

    def reset(self, symbol: str) -> None:
        """A `reset` frame: the symbol's seq restarts, and its accounting with it."""
        self.last_seq.pop(symbol, None)

    def stale(self, final: Mapping[str, int], symbols: Iterable[str]) -> int:
        """How many of `symbols` this connection did not end on: its last seq differs from
        the final snapshot's seq (`final`, symbol -> seq)."""
        return sum(1 for s in symbols if s in final and self.last_seq.get(s, 0) != final[s])
