"""The hub's counters, read by the metrics view. Plain numbers; no I/O."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


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
    # ticks and frames sent to connections that are gone (live ones count their own)
    ticks_sent_closed: int = 0
    frames_closed: int = 0
