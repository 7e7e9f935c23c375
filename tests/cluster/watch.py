"""Clients of the cluster: the project's client library, connected through the proxy, recording.

A `Watcher` is one `marketstream.client.Client` (it reconnects and recovers with `since` by
itself) whose events are recorded as they come: every tick (with its receive time), each
connection (with the hub that served it: HAProxy's `X-Marketstream-Hub` response header) and
each disconnect. The checks read the records: per symbol, the seqs one client received must
run without a gap or a repeat from its first tick to the last one published.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from marketstream.client import Ack, Client, Connected, Disconnected, Tick, Unsubscribed


@dataclass(frozen=True)
class Seen:
    """One tick as a watcher received it."""

    seq: int
    conflated: int
    snapshot: bool
    ts: int  # when the tick entered the hub's ingest (ns)
    wall: int  # when the watcher received it (ns, same clock: one machine)
    at: float  # time.monotonic() at receipt
    connection: int  # which of the watcher's connections brought it (0: the first)


@dataclass
class Watcher:
    """One recording client. `start()` connects and subscribes; `close()` ends it."""

    name: str
    url: str
    symbols: Sequence[str]
    client: Client | None = None
    ticks: dict[str, list[Seen]] = field(default_factory=dict)
    hubs: list[str] = field(default_factory=list)  # the hub of each connection, in order
    connected_at: list[float] = field(default_factory=list)  # time.monotonic() of each connection
    connected_wall: list[int] = field(default_factory=list)  # time.time_ns() of each connection
    disconnects: list[tuple[float, int, str]] = field(default_factory=list)  # (monotonic, code, reason)
    unsubscribed: list[tuple[float, tuple[str, ...], str]] = field(default_factory=list)
    ack: Ack | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.client = Client(self.url, open_timeout=10.0, request_timeout=10.0)
        await self.client.connect()
        self._task = asyncio.create_task(self._record(self.client), name=f"watcher-{self.name}")
        self.ack = await self.client.subscribe(self.symbols)

    @property
    def hub(self) -> str:
        """The hub of the current (last) connection."""
        return self.hubs[-1] if self.hubs else "?"

    def _current_hub(self, client: Client) -> str:
        ws = client._ws  # the library's open connection: its handshake response names the hub
        if ws is None or ws.response is None:
            return "?"
        return ws.response.headers.get("X-Marketstream-Hub", "?")

    async def _record(self, client: Client) -> None:
        async for event in client:
            now = time.monotonic()
            if isinstance(event, Tick):
                seen = Seen(
                    event.seq, event.conflated, event.snapshot, event.ts, time.time_ns(), now, len(self.hubs) - 1
                )
                self.ticks.setdefault(event.symbol, []).append(seen)
            elif isinstance(event, Connected):
                self.hubs.append(self._current_hub(client))
                self.connected_at.append(now)
                self.connected_wall.append(time.time_ns())
            elif isinstance(event, Disconnected):
                self.disconnects.append((now, event.code, event.reason))
            elif isinstance(event, Unsubscribed):
                self.unsubscribed.append((now, event.symbols, event.reason))

    def last_seq(self, symbol: str) -> int:
        seen = self.ticks.get(symbol)
        return seen[-1].seq if seen else 0

    def gaps(self, symbol: str) -> list[tuple[int, int]]:
        """Pairs (previous seq, seq) of consecutive ticks received with seqs skipped and not conflated,
        or not increasing: none when every tick came once and in order."""
        seen = self.ticks.get(symbol, [])
        return [(a.seq, b.seq) for a, b in itertools.pairwise(seen) if b.seq != a.seq + 1 + b.conflated]

    def recovered_ticks(self, connection: int) -> int:
        """Ticks that `connection` brought which entered the hub before it opened: what `since` recovered."""
        if connection >= len(self.connected_wall):
            return 0
        opened = self.connected_wall[connection]
        return sum(1 for seen in self.ticks.values() for s in seen if s.connection == connection and s.ts < opened)

    def duplicates(self) -> int:
        """Ticks the library dropped because their seq did not increase (a hub bug if ever > 0)."""
        return sum(s.duplicates for s in self.client.stats.values()) if self.client else 0

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def start_watchers(url: str, symbols: Sequence[str], count: int, prefix: str = "c") -> list[Watcher]:
    """`count` watchers of `symbols`, connected one after the other (so the proxy's leastconn
    alternates between the hubs)."""
    watchers = []
    for i in range(count):
        w = Watcher(f"{prefix}{i}", url, symbols)
        watchers.append(w)
        await w.start()
    return watchers


async def close_all(watchers: Iterable[Watcher]) -> None:
    await asyncio.gather(*(w.close() for w in watchers), return_exceptions=True)


async def wait_caught_up(watchers: Sequence[Watcher], final: dict[str, int], within: float = 20.0) -> float:
    """Wait until every watcher received each symbol's `final` seq; seconds it took. Raises
    AssertionError listing who lags when it does not happen `within` seconds."""
    start = time.monotonic()
    while True:
        behind = [(w.name, s, w.last_seq(s), n) for w in watchers for s, n in final.items() if w.last_seq(s) < n]
        if not behind:
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(
                f"not every tick arrived within {within} s; (client, symbol, has, final): {behind[:8]}"
            )
        await asyncio.sleep(0.05)


async def wait_reconnected(watchers: Sequence[Watcher], since: float, within: float) -> list[float]:
    """Wait until each watcher has a connection opened after `since` (monotonic) and its resubscribe
    answered; the seconds from `since` to that connection, per watcher."""
    start = time.monotonic()
    while True:
        back = [next((t - since for t in w.connected_at if t > since), None) for w in watchers]
        if all(b is not None for b in back):
            return [b for b in back if b is not None]
        if time.monotonic() - start > within:
            late = [w.name for w, b in zip(watchers, back, strict=True) if b is None]
            raise AssertionError(f"{late} did not reconnect within {within} s")
        await asyncio.sleep(0.05)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) of `values`, nearest rank; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def latencies_ms(watchers: Iterable[Watcher], since: float = 0.0) -> list[float]:
    """Receive time minus ingest time of every live tick (not snapshots) received after `since` (monotonic)."""
    return [
        (s.wall - s.ts) / 1e6
        for w in watchers
        for seen in w.ticks.values()
        for s in seen
        if not s.snapshot and s.at >= since
    ]


def describe(values: Sequence[float], unit: str = "ms") -> str:
    if not values:
        return "none"
    return (
        f"p50 {percentile(values, 50):.1f} {unit}, p99 {percentile(values, 99):.1f} {unit}, "
        f"max {max(values):.1f} {unit}, mean {statistics.fmean(values):.1f} {unit} (n={len(values)})"
    )
