"""Recovery: what a reconnecting client missed, from history, read once per symbol.

`HistoryReads.tail` reads the recent history of a symbol for every connection that asks
for it at about the same moment (within `window` seconds): a reconnect storm costs one
store round trip per window for all symbols, not one read per client per symbol. A read
starts only after every request in it was made, so each requester's live ticks (routed
before it asked) meet the history it gets without a gap.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from marketstream.core.store import History, Store
from marketstream.core.tick import EncodedTick

WINDOW = 0.002  # seconds a history read waits for more requests to share it
READ_TIMEOUT = 5.0


def missed(history: History, since: int, epoch: str | None, max_recovery: int) -> list[EncodedTick] | None:
    """The ticks after `since` that history holds, if they are every one of them
    (PROTOCOL.md, "Recovery"); None when recovery is not possible: the epoch is not the
    current one, `since` is ahead of the symbol's seq, more than `max_recovery` ticks are
    missing, or history does not hold every seq after `since`."""
    if epoch is not None and epoch != history.epoch:
        return None
    missing = history.last_seq - since
    if missing < 0 or missing > max_recovery:
        return None
    if missing == 0:
        return []
    if not history.first_seq or history.first_seq > since + 1:
        return None
    ticks = [t for t in history.ticks if t.seq > since]
    if len(ticks) != missing or ticks[0].seq != since + 1:
        return None
    return ticks


@dataclass(slots=True)
class RecoveryStats:
    reads: int = 0  # store round trips
    served: int = 0  # symbols recovered
    refused: int = 0  # symbols answered `recovered: false`
    ticks: int = 0  # ticks delivered from history


class HistoryReads:
    """Shared reads of what recovering connections missed: per symbol, the last `limit`
    ticks after the lowest `since` of the requests that share the read."""

    def __init__(self, store: Store, limit: int, window: float = WINDOW) -> None:
        self.store = store
        self.limit = limit
        self.window = window
        self.stats = RecoveryStats()
        self._next: dict[str, asyncio.Future[History]] = {}  # the read that has not started yet
        self._after: dict[str, int] = {}  # its lowest `since` per symbol
        self._reading: set[asyncio.Task[None]] = set()

    async def tail(self, symbol: str, after: int) -> History:
        """The symbol's last `limit` ticks after `after` (or after a lower seq that another
        request of the same read holds), read after this call was made."""
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

    def _start(self) -> None:
        batch, self._next = self._next, {}
        after, self._after = self._after, {}
        if batch:
            task = asyncio.get_running_loop().create_task(self._read(batch, after))
            self._reading.add(task)
            task.add_done_callback(self._reading.discard)

    async def _read(self, batch: dict[str, asyncio.Future[History]], after: dict[str, int]) -> None:
        self.stats.reads += 1
        try:
            found = await asyncio.wait_for(self.store.tails(after, self.limit), READ_TIMEOUT)
        except BaseException as exc:
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else ConnectionError("cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        for symbol, future in batch.items():
            if not future.done():
                future.set_result(found.get(symbol, History()))


def _retrieve(future: asyncio.Future[History]) -> None:
    """Mark a failed read's exception as seen (its requesters may all have gone)."""
    if not future.cancelled():
        future.exception()
