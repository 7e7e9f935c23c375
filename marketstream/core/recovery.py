"""Recovery: what a reconnecting client missed, from history, read once per symbol.

`HistoryReads.tail` reads the recent history of a symbol for every connection that asks
for it at about the same moment (within `window` seconds), in one store round trip for
all symbols. A read starts only after every request in it was made, so each
requester's live ticks (routed before it asked) meet the history it gets without a gap.

After a read, the hub keeps the symbol's ticks from there on (`Recent`: the history
read, then every tick it delivers) while recoveries keep coming, so the rest of a
reconnect storm is served from memory: one store read per symbol, not one per client.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from marketstream.core.store import History, Store
from marketstream.core.tick import EncodedTick

WINDOW = 0.002  # seconds a history read waits for more requests to share it
READ_TIMEOUT = 5.0
KEEP = 30.0  # seconds a symbol's recent ticks are kept after the last recovery that used them

# why a symbol was answered `recovered: false`: `check`'s reasons, and `unavailable` (history unreadable)
Refusal = Literal["epoch", "ahead", "too_many", "too_old", "unavailable"]
REFUSALS: tuple[Refusal, ...] = ("epoch", "ahead", "too_many", "too_old", "unavailable")


def missed(history: History, since: int, epoch: str | None, max_recovery: int) -> list[EncodedTick] | None:
    """The ticks after `since` that history holds, if they are every one of them
    (PROTOCOL.md, "Recovery"); None when recovery is not possible (`refusal` says why)."""
    ticks, _ = check(history, since, epoch, max_recovery)
    return ticks


def check(
    history: History, since: int, epoch: str | None, max_recovery: int
) -> tuple[list[EncodedTick], None] | tuple[None, Refusal]:
    """`missed`, with the reason when recovery is not possible: `epoch` (the epoch is not
    the current one), `ahead` (`since` is ahead of the symbol's seq), `too_many` (more
    than `max_recovery` ticks are missing) or `too_old` (history does not hold every seq
    after `since`)."""
    if epoch is not None and epoch != history.epoch:
        return None, "epoch"
    missing = history.last_seq - since
    if missing < 0:
        return None, "ahead"
    if missing > max_recovery:
        return None, "too_many"
    if missing == 0:
        return [], None
    if not history.first_seq or history.first_seq > since + 1:
        return None, "too_old"
    ticks = [t for t in history.ticks if t.seq > since]
    if len(ticks) != missing or ticks[0].seq != since + 1:
        return None, "too_old"
    return ticks, None


@dataclass(slots=True)
class RecoveryStats:
    reads: int = 0  # store round trips
    served: int = 0  # symbols recovered
    refused: int = 0  # symbols answered `recovered: false`
    refused_by: Counter[str] = field(default_factory=Counter)  # the same, by Refusal
    ticks: int = 0  # ticks delivered from history
    from_memory: int = 0  # symbols recovered from the ticks kept since an earlier read


class Recent:
    """A symbol's ticks from a history read on, kept up to date with every tick the hub
    delivers: seq-contiguous, as the hub delivers gap-free (or records the loss)."""

    __slots__ = ("epoch", "first_seq", "last_seq", "ready", "ticks", "used")

    def __init__(self, limit: int, used: float) -> None:
        self.ticks: collections.deque[EncodedTick] = collections.deque(maxlen=max(1, limit))
        self.epoch = ""
        self.first_seq = 0  # the oldest seq the store's history held at the read
        self.last_seq = 0  # the symbol's seq at the read
        self.ready = False  # False until the read it starts from has answered
        self.used = used

    def seed(self, history: History) -> None:
        """The read answered: its ticks, then the live ones delivered meanwhile."""
        live = [t for t in self.ticks if t.seq > history.last_seq]
        self.ticks.clear()
        self.ticks.extend(history.ticks)
        self.ticks.extend(live)
        self.epoch = history.epoch
        self.first_seq = history.first_seq
        self.last_seq = history.last_seq
        self.ready = True

    def covers(self, after: int) -> bool:
        """Whether the kept ticks hold everything after `after` (as far as `limit` goes)."""
        if not self.ready:
            return False
        ticks = self.ticks
        if not ticks:
            return after >= self.last_seq
        return ticks[0].seq <= after + 1 or after >= ticks[-1].seq

    def since(self, after: int) -> History:
        """What a client that holds `after` missed, as a read would answer it now."""
        last = max(self.ticks[-1].seq, self.last_seq) if self.ticks else self.last_seq
        return History(self.epoch, self.first_seq, last, [t for t in self.ticks if t.seq > after])


class HistoryReads:
    """Shared reads of what recovering connections missed: per symbol, the last `limit`
    ticks after the lowest `since` of the requests that share the read."""

    def __init__(
        self, store: Store, limit: int, window: float = WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.limit = limit
        self.window = window
        self.clock = clock
        self.stats = RecoveryStats()
        self.recent: dict[str, Recent] = {}  # symbols being recovered: their ticks since a read
        self._next: dict[str, asyncio.Future[History]] = {}  # the read that has not started yet
        self._after: dict[str, int] = {}  # its lowest `since` per symbol
        self._reading: set[asyncio.Task[None]] = set()

    def saw(self, tick: EncodedTick) -> None:
        """The hub delivered `tick`: keep it if its symbol is being recovered."""
        recent = self.recent.get(tick.symbol)
        if recent is not None and (not recent.ticks or tick.seq > recent.ticks[-1].seq):
            recent.ticks.append(tick)  # in seq order: a gap fill's ticks already read are not kept twice

    def forget(self, symbol: str) -> None:
        """The hub left `symbol`, or its epoch changed: its kept ticks are no use."""
        self.recent.pop(symbol, None)

    async def tail(self, symbol: str, after: int) -> History:
        """The symbol's last `limit` ticks after `after` (or after a lower seq that another
        request of the same read holds), as of after this call was made: from the ticks
        kept since an earlier read when they reach back far enough, else read."""
        now = self.clock()
        recent = self.recent.get(symbol)
        if recent is not None and recent.covers(after):
            found = recent.since(after)
            if _contiguous(found, after):
                recent.used = now
                self.stats.from_memory += 1
                return found
            del self.recent[symbol]  # a hole in what was kept: read history instead
        self._expire(now)
        future = self._next.get(symbol)
        if future is None:
            loop = asyncio.get_running_loop()
            if not self._next:
                loop.call_later(self.window, self._start)
            future = self._next[symbol] = loop.create_future()
            future.add_done_callback(_retrieve)
            self._after[symbol] = after
        elif after < self._after[symbol]:
            self._after[symbol] = after
        return await asyncio.shield(future)  # one requester giving up does not cancel the others

    def stop(self) -> None:
        for task in self._reading:
            task.cancel()

    def _expire(self, now: float) -> None:
        for symbol in [s for s, r in self.recent.items() if r.ready and now - r.used > KEEP]:
            del self.recent[symbol]

    def _start(self) -> None:
        batch, self._next = self._next, {}
        after, self._after = self._after, {}
        now = self.clock()
        kept = {symbol: Recent(self.limit, now) for symbol in batch}
        self.recent.update(kept)  # from now on, keep what the hub delivers: the read is older
        if batch:
            task = asyncio.get_running_loop().create_task(self._read(batch, after, kept))
            self._reading.add(task)
            task.add_done_callback(self._reading.discard)

    async def _read(
        self, batch: dict[str, asyncio.Future[History]], after: dict[str, int], kept: dict[str, Recent]
    ) -> None:
        self.stats.reads += 1
        try:
            found = await asyncio.wait_for(self.store.tails(after, self.limit), READ_TIMEOUT)
        except BaseException as exc:
            for symbol, recent in kept.items():
                if self.recent.get(symbol) is recent:
                    del self.recent[symbol]
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else ConnectionError("cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        for symbol, future in batch.items():
            history = found.get(symbol, History())
            recent = kept[symbol]
            if self.recent.get(symbol) is recent:  # not replaced by a later read's (which has its own)
                recent.seed(history)
            if not future.done():
                future.set_result(history)


def _contiguous(history: History, after: int) -> bool:
    """Whether `history` holds every seq from `after` + 1 to its last seq."""
    ticks = history.ticks
    if not ticks:
        return history.last_seq <= after
    return (
        ticks[0].seq == after + 1
        and ticks[-1].seq == history.last_seq
        and all(b.seq == a.seq + 1 for a, b in itertools.pairwise(ticks))
    )


def _retrieve(future: asyncio.Future[History]) -> None:
    """Mark a failed read's exception as seen (its requesters may all have gone)."""
    if not future.cancelled():
        future.exception()
