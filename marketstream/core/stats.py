"""The hub's counters, read by the metrics adapter. Plain numbers; no I/O.

Everything on the tick path stays a plain attribute increment: the metrics adapter
(marketstream/adapters/prometheus.py) reads these counters every few seconds and on a
scrape, and turns their growth into Prometheus counters. Nothing here knows Prometheus.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from marketstream.core.tick import EncodedTick, now_ns

LATENCY_SAMPLE_EVERY = 64  # about one frame in this many (connections flushed) has its latency sampled
MAX_LATENCY_SAMPLES = 10_000  # samples kept until the metrics adapter takes them; more are dropped


@dataclass(slots=True)
class Stats:
    """What one hub process has done since it started. Counters only grow."""

    ticks_received: int = 0  # ticks the transport delivered to this hub
    transport_errors: int = 0  # failed receives from the tick transport
    bad_messages: int = 0  # transport messages that were not ticks
    last_message: float | None = None  # hub clock when the transport last delivered a tick
    closes: Counter[int] = field(default_factory=Counter)  # close code -> connections the hub closed
    duplicates: int = 0  # ticks received again (already delivered from history)
    ticks_filled: int = 0  # ticks of a gap in what the hub received, read from history
    ticks_lost: int = 0  # seqs the hub never received and history no longer held
    resets: int = 0  # new epochs seen (a symbol's seq restarted)
    # ticks, frames, bytes sent and ticks conflated for connections that are gone (live ones count their own)
    ticks_sent_closed: int = 0
    frames_closed: int = 0
    bytes_closed: int = 0
    conflated_closed: int = 0
    # the edge's counts: handshakes by outcome ("accepted", "refused_*"), error replies by code
    handshakes: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    # latency sampling (feed `ts` to send): about one connection flushed in `sample_every` (core/fanout.py)
    sample_every: int = LATENCY_SAMPLE_EVERY
    sample_countdown: int = LATENCY_SAMPLE_EVERY
    latency_ns: list[int] = field(default_factory=list)  # taken (and emptied) by the metrics adapter

    def sample_latency(self, tick: EncodedTick) -> None:
        """Record now - `tick`'s `ts` (ns), the tick having just been sent (the first of its
        frame: the oldest). Decodes the tick, which the tick path never does otherwise. A
        tick without `ts` is skipped; past MAX_LATENCY_SAMPLES untaken samples, new ones
        are dropped."""
        samples = self.latency_ns
        if len(samples) < MAX_LATENCY_SAMPLES:
            ts = tick.decode().get("ts")
            if isinstance(ts, int) and ts > 0:
                samples.append(now_ns() - ts)


MAX_PUBLISH_SAMPLES = 10_000  # publish durations kept until the metrics adapter takes them


@dataclass(slots=True)
class PublishStats:
    """What one publisher has done: plain numbers, read by the feed's metrics adapter."""

    ticks: int = 0  # ticks published (given a seq and sent)
    publish_s: list[float] = field(default_factory=list)  # seconds of each publish round trip, untaken
    lag_s: float = 0.0  # how late the source's last batch was against its schedule, seconds

    def published(self, ticks: int, seconds: float) -> None:
        """One batch of `ticks` went out in `seconds` (one store round trip)."""
        self.ticks += ticks
        if len(self.publish_s) < MAX_PUBLISH_SAMPLES:
            self.publish_s.append(seconds)
