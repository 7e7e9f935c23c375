"""Replay of recorded ticks: a feed source that publishes a file's ticks at their original
timing (or `speed` times faster), in the file's order.

Files: NDJSON (`.ndjson`, `.jsonl`: one JSON object per line), or CSV (`.csv`, a header
row naming the columns); either may be gzipped (`.gz`). Each record has the quote's
fields (feeds/quotes.py) and its time: `src_ts`, or else `ts` (int ns). What
`python -m marketstream.client ... --record FILE.ndjson` writes is such a file; other
fields (`seq`, `conflated`, ...) are ignored: the hub assigns seq again.

Timing: the first record is published at once, each next one when as much time has
passed since the start, divided by `speed`, as between its time and the first record's
(`speed` 0: as fast as possible). Records due together go in one batch. The published
tick keeps the record's time as `src_ts`; its `ts` is the time of publishing. With
`loop`, the file starts again after its last record, one mean gap later (`src_ts` as in
the file).
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, cast

from feeds.quotes import BadQuote, parse_quote, source_time
from feeds.runner import sleep_or_stop
from feeds.simulated import Quote, TimedQuote
from marketstream.core.symbols import SymbolInfo

MAX_BATCH = 1000  # quotes per batch at most (as fast as possible, or a burst of one instant)
SAMPLE = Path(__file__).resolve().parent / "samples" / "ticks.ndjson"  # recorded from the simulated feed


class ReplayError(ValueError):
    """A file that cannot be replayed: where, and why."""


Record = tuple[int, TimedQuote]  # its time (ns), and the quote with that time as src_ts


def read_records(path: Path) -> Iterator[Record]:
    """The file's records in order; raises ReplayError naming the line of a bad one."""
    name = path.name.lower().removesuffix(".gz")
    if not name.endswith((".csv", ".ndjson", ".jsonl")):
        raise ReplayError(f"{path}: expected a .csv, .ndjson or .jsonl file (optionally .gz)")
    with _open(path) as f:
        if name.endswith(".csv"):
            reader = csv.DictReader(f)
            for n, row in enumerate(reader, start=2):
                yield _record(path, n, row, text=True)
            return
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    raw = json.loads(line)
                except ValueError as exc:
                    raise ReplayError(f"{path}:{n}: not JSON: {exc}") from None
                yield _record(path, n, raw, text=False)


def _open(path: Path) -> IO[str]:
    try:
        if path.name.lower().endswith(".gz"):
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
        return open(path, encoding="utf-8", newline="")
    except OSError as exc:
        raise ReplayError(f"{path}: {exc.strerror or exc}") from None


def _record(path: Path, line: int, raw: object, text: bool) -> Record:
    try:
        quote = parse_quote(raw, strict=False, text=text)
        fields = cast(Mapping[str, Any], raw)  # parse_quote refuses anything but a map
        at = source_time(fields, "src_ts", text) or source_time(fields, "ts", text)
    except BadQuote as exc:
        raise ReplayError(f"{path}:{line}: {exc.message}") from None
    if at is None:
        raise ReplayError(f"{path}:{line}: a record needs its time: src_ts or ts (int ns)")
    return at, (*quote[:5], at)


class ReplaySource:
    """A `feeds.runner.Source` of a recorded file (see the module's docstring)."""

    def __init__(self, path: Path | str, speed: float = 1.0, loop: bool = False) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0 (0: as fast as possible), got {speed}")
        self.path = Path(path)
        self.speed = speed
        self.loop = loop
        self._symbols: list[str] | None = None
        self.first = 0  # the first record's time
        self.period = 0.0  # seconds (at speed 1) from the first record of one pass to the first of the next
        self.lag = 0.0  # seconds the last record was late against its original timing

    def infos(self) -> dict[str, SymbolInfo]:
        """A recording names its symbols, nothing more: the catalog keeps what it knows."""
        return {}

    def symbols(self) -> list[str]:
        """The file's symbols, in order of first appearance; reads (and checks) the whole file once."""
        if self._symbols is None:
            seen: dict[str, None] = {}
            count, last = 0, 0
            for at, quote in read_records(self.path):
                if count == 0:
                    self.first = at
                seen.setdefault(quote[0])
                count, last = count + 1, at
            if count == 0:
                raise ReplayError(f"{self.path}: no records")
            span = max(0, last - self.first) / 1e9
            self.period = span + (span / (count - 1) if count > 1 and span > 0 else 1.0)
            self._symbols = list(seen)
        return self._symbols

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[Sequence[Quote | TimedQuote]]:
        self.symbols()
        start = time.monotonic()
        offset = 0.0  # seconds from the start to this pass's first record, at speed 1
        while not stop.is_set():
            batch: list[Quote | TimedQuote] = []
            for at, quote in read_records(self.path):
                if self.speed:
                    due = start + (offset + (at - self.first) / 1e9) / self.speed
                    now = time.monotonic()
                    self.lag = max(0.0, now - due)  # how late this record is (the feed's metrics)
                    if due > now:
                        if batch:
                            yield batch
                            batch = []
                        await sleep_or_stop(stop, due - time.monotonic())
                if stop.is_set():
                    return
                batch.append(quote)
                if len(batch) >= MAX_BATCH:
                    yield batch
                    batch = []
            if batch:
                yield batch
            if not self.loop:
                return
            offset += self.period
