"""HTTP ingest: external publishers' ticks, validated one by one, published like a feed's.

`POST /api/v1/ticks` (marketstream/views.py) hands the body here. Each tick is checked
on its own (feeds/quotes.py); the valid ones are published as one batch through the
process's `Publisher`, so they get `ts` there and their seq from the store (publish.lua
on Redis: the same authority as every feed's), are kept as snapshot and history, count
in bars, and reach every hub. The invalid ones are listed in the answer, each with its
index and the reason; they do not stop the others (as a subscribe applies to every
acceptable symbol). Answers:

- 200: at least one tick was published; `ticks` gives each one's index, seq and epoch,
  `rejected` the others (empty when none);
- 422: no tick was valid (nothing was published; `rejected` says why for each);
- 400: the body is not a map with a list `ticks` of 1 to MAX_TICKS ticks; 413: larger;
  415: neither JSON nor msgpack; 503: the store could not be reached (nothing published).

Bars of ingested symbols are made final on time by this process's own timer (each
second, for symbols ingested in the last BARS_TTL seconds); finalization is idempotent,
so a feed or another hub doing the same for a symbol does no harm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson

from feeds.publisher import Publisher
from feeds.quotes import BadQuote, parse_quote
from feeds.runner import finalize_bars
from feeds.simulated import Quote, TimedQuote
from marketstream.core.transport import Unavailable

log = logging.getLogger(__name__)

MAX_TICKS = 10_000  # ticks per request at most
BARS_TTL = 2 * 3600.0  # seconds after a symbol's last ingested tick during which its bars are ended on time
JSON_TYPES = ("application/json", "")
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")


@dataclass
class Answer:
    """An HTTP status and its JSON body."""

    status: int
    body: dict[str, Any]


def error(status: int, code: str, message: str) -> Answer:
    return Answer(status, {"error": code, "message": message})


@dataclass
class IngestStats:
    requests: int = 0
    accepted: int = 0
    rejected: int = 0


class Ingest:
    """The ingest of one hub process (built by marketstream.wiring, closed at shutdown)."""

    def __init__(self, publisher: Publisher, bars: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self.publisher = publisher
        self.bars = bars
        self.clock = clock
        self.stats = IngestStats()
        self.recent: dict[str, float] = {}  # symbol -> when its last tick was ingested (clock)
        self.symbols: list[str] = []  # whose bars the timer ends: updated in place, read each second
        self._expired = clock()
        self._stop = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None

    async def accept(self, body: bytes, content_type: str) -> Answer:
        """Validate and publish the ticks of one request body."""
        self.stats.requests += 1
        try:
            raw = decode(body, content_type)
        except BadBody as exc:
            return exc.answer
        quotes: list[Quote | TimedQuote] = []
        indexes: list[int] = []
        rejected: list[dict[str, Any]] = []
        for i, item in enumerate(raw):
            try:
                quotes.append(parse_quote(item, strict=True))
                indexes.append(i)
            except BadQuote as exc:
                rejected.append({"index": i, **exc.as_dict()})
        self.stats.rejected += len(rejected)
        if not quotes:
            return Answer(422, {"accepted": 0, "ticks": [], "rejected": rejected})
        down: set[str] = set()
        try:
            ticks = await self.publisher.publish(quotes)
        except Unavailable as exc:  # some symbols' shard is down: the others' ticks are published
            if not exc.ticks:
                return error(503, "unavailable", f"the store could not be reached; nothing was published ({exc})")
            ticks, down = exc.ticks, exc.symbols
            kept = [(i, q) for i, q in zip(indexes, quotes, strict=True) if q[0] not in down]
            message = "the shard of this symbol is down; not published"
            rejected += [
                {"index": i, "code": "unavailable", "field": "symbol", "message": message}
                for i, q in zip(indexes, quotes, strict=True)
                if q[0] in down
            ]
            rejected.sort(key=lambda r: int(r["index"]))
            indexes, quotes = [i for i, _ in kept], [q for _, q in kept]
        except Exception as exc:
            log.warning("ingest: publishing %d ticks failed: %s: %s", len(quotes), type(exc).__name__, exc)
            return error(503, "unavailable", f"the store could not be reached; nothing was published ({exc})")
        self.stats.accepted += len(ticks)
        if self.bars:
            self._track(quotes)
        published = [
            {"index": i, "symbol": t.symbol, "seq": t.seq, "epoch": t.epoch}
            for i, t in zip(indexes, ticks, strict=True)
        ]
        return Answer(200, {"accepted": len(ticks), "ticks": published, "rejected": rejected})

    def _track(self, quotes: list[Quote | TimedQuote]) -> None:
        """Remember the symbols ingested for the bar timer (started with the first tick);
        forget, once a minute, those not ingested for BARS_TTL."""
        now = self.clock()
        recent = self.recent
        for quote in quotes:
            recent[quote[0]] = now
        if now - self._expired > 60:
            self._expired = now
            for symbol in [s for s, at in recent.items() if now - at > BARS_TTL]:
                del recent[symbol]
        if len(recent) != len(self.symbols):
            self.symbols[:] = sorted(recent)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(
                finalize_bars(self.publisher, self.symbols, self._stop)
            )

    async def close(self) -> None:
        self._stop.set()
        if self._timer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer


class BadBody(Exception):
    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.body.get("message"))
        self.answer = answer


def decode(body: bytes, content_type: str) -> list[Any]:
    """The list of ticks of a body: `{"ticks": [...]}` in JSON or msgpack. Raises BadBody."""
    kind = content_type.split(";")[0].strip().lower()
    try:
        if kind in JSON_TYPES:
            value = orjson.loads(body)
        elif kind in MSGPACK_TYPES:
            value = msgpack.unpackb(body, raw=False)
        else:
            raise BadBody(
                error(
                    415,
                    "unsupported_media_type",
                    f"expected application/json or application/msgpack, got {kind[:64]!r}",
                )
            )
    except (ValueError, msgpack.UnpackException) as exc:
        raise BadBody(error(400, "bad_request", f"the body is not valid {kind or 'JSON'}: {exc}")) from None
    ticks = value.get("ticks") if isinstance(value, dict) else None
    if not isinstance(ticks, list) or not ticks:
        raise BadBody(error(400, "bad_request", 'expected a map {"ticks": [tick, ...]} with at least one tick'))
    if len(ticks) > MAX_TICKS:
        raise BadBody(error(413, "too_many_ticks", f"at most {MAX_TICKS} ticks per request, got {len(ticks)}"))
    return ticks
