"""Recovery: what a client missed after `since` (every case of PROTOCOL.md's "Recovery"),
and history reads shared by the requests of one short window."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Mapping

import pytest

from marketstream.core import recovery as recovery_module
from marketstream.core.recovery import KEEP, HistoryReads, check, missed
from marketstream.core.store import History, MemoryStore
from marketstream.core.tick import EncodedTick
from tests.unit.core.fakes import draft, tick

WINDOW = 0.01  # seconds: long enough that requests made in one loop turn share a read


def history(first: int, last: int, epoch: str = "e1", last_seq: int | None = None) -> History:
    """History holding seqs first..last of a symbol whose seq is `last_seq` (default `last`)."""
    ticks = [tick("A", s, epoch=epoch) for s in range(first, last + 1)]
    return History(epoch, first if ticks else 0, last if last_seq is None else last_seq, ticks)


def seqs(ticks: list[EncodedTick] | None) -> list[int] | None:
    return None if ticks is None else [t.seq for t in ticks]


# -- missed -------------------------------------------------------------------------------


def test_exactly_the_ticks_after_since() -> None:
    assert seqs(missed(history(1, 10), 6, None, 100)) == [7, 8, 9, 10]
    assert seqs(missed(history(1, 10), 6, "e1", 100)) == [7, 8, 9, 10], "the current epoch named"
    assert seqs(missed(history(5, 10), 4, "e1", 100)) == [5, 6, 7, 8, 9, 10], "history reaches back just enough"
    assert seqs(missed(history(1, 10), 0, None, 100)) == list(range(1, 11)), "since 0: everything"


def test_nothing_missed_is_an_empty_list() -> None:
    assert missed(history(1, 10), 10, None, 100) == []
    assert missed(history(1, 10), 10, "e1", 0) == [], "even with max_recovery 0"
    assert missed(History(), 0, None, 100) == [], "a symbol without ticks, nothing held"
    assert missed(history(1, 0, last_seq=10), 10, None, 100) == [], "history need not hold anything"


def test_an_epoch_that_is_not_the_current_one() -> None:
    assert missed(history(1, 10), 6, "e0", 100) is None
    assert missed(history(1, 10), 10, "e0", 100) is None, "even when nothing was missed"
    assert missed(History(), 0, "e0", 100) is None


def test_since_ahead_of_the_symbols_seq() -> None:
    assert missed(history(1, 10), 11, None, 100) is None
    assert missed(History(), 1, None, 100) is None


def test_more_missing_than_max_recovery() -> None:
    assert missed(history(1, 10), 4, None, 5) is None
    assert seqs(missed(history(1, 10), 5, None, 5)) == [6, 7, 8, 9, 10], "exactly max_recovery is fine"
    assert missed(history(1, 10), 9, None, 0) is None


def test_history_that_does_not_reach_back() -> None:
    assert missed(history(5, 10), 3, None, 100) is None, "4 is no longer kept"
    assert missed(history(1, 0, last_seq=10), 6, None, 100) is None, "history holds nothing"


def test_history_that_does_not_hold_every_seq() -> None:
    holey = history(1, 10)
    holey = History(holey.epoch, 1, 10, [t for t in holey.ticks if t.seq != 8])
    assert missed(holey, 5, None, 100) is None
    short = history(1, 8, last_seq=10)  # a tail read before the last ticks were kept
    assert missed(short, 5, None, 100) is None


# -- shared reads ---------------------------------------------------------------------------


class CountingStore(MemoryStore):
    """A MemoryStore that counts its `tails` calls, optionally failing or waiting in them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []
        self.afters: list[dict[str, int]] = []
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.called = asyncio.Event()

    async def tails(self, after: Mapping[str, int], limit: int) -> dict[str, History]:
        self.calls.append(list(after))
        self.afters.append(dict(after))
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return await super().tails(after, limit)


@pytest.fixture
async def store() -> CountingStore:
    s = CountingStore()
    await s.append([draft("A") for _ in range(5)] + [draft("B") for _ in range(3)])
    return s


async def test_a_tail_is_the_symbols_recent_history(store: CountingStore) -> None:
    reads = HistoryReads(store, 3, WINDOW)
    found = await reads.tail("A", 0)
    assert [t.seq for t in found.ticks] == [3, 4, 5] and (found.first_seq, found.last_seq) == (1, 5)
    assert found.epoch == store.epochs["A"]
    assert store.calls == [["A"]] and reads.stats.reads == 1


async def test_concurrent_tails_within_the_window_share_one_store_call(store: CountingStore) -> None:
    reads = HistoryReads(store, 10, WINDOW)
    found = await asyncio.gather(*(reads.tail(s, 0) for s in ["A", "B", "A", "C", "B", "A"]))
    assert len(store.calls) == 1 and sorted(store.calls[0]) == ["A", "B", "C"], "one call, each symbol once"
    assert reads.stats.reads == 1
    assert [h.last_seq for h in found] == [5, 3, 5, 0, 3, 5]
    assert found[0] is found[2] is found[5], "one result shared by the requesters of a symbol"
    assert found[3] == History(), "a symbol without ticks"


async def test_a_request_made_later_in_the_window_joins_the_read(store: CountingStore) -> None:
    reads = HistoryReads(store, 10, WINDOW)
    first = asyncio.create_task(reads.tail("A", 0))
    await asyncio.sleep(WINDOW / 5)
    second = asyncio.create_task(reads.tail("B", 0))
    await asyncio.gather(first, second)
    assert store.calls == [["A", "B"]]


async def test_a_read_waits_for_the_window_so_it_sees_what_came_meanwhile(store: CountingStore) -> None:
    reads = HistoryReads(store, 10, WINDOW)
    task = asyncio.create_task(reads.tail("A", 0))
    await asyncio.sleep(0)
    await store.append([draft("A")])  # kept after the request was made, before the read
    assert (await task).last_seq == 6


async def test_a_later_request_is_served_from_the_ticks_kept_since_the_read(store: CountingStore) -> None:
    reads = HistoryReads(store, 10, WINDOW)
    await reads.tail("A", 2)
    for kept in await store.append([draft("A")]):
        reads.saw(kept)  # the hub delivered it
    again = await reads.tail("A", 3)
    assert store.calls == [["A"]] and reads.stats.reads == 1 and reads.stats.from_memory == 1
    assert [t.seq for t in again.ticks] == [4, 5, 6] and again.last_seq == 6 and again.first_seq == 1


async def test_a_request_from_further_back_than_what_is_kept_reads_again(store: CountingStore) -> None:
    reads = HistoryReads(store, 10, WINDOW)
    await reads.tail("A", 4)
    earlier = await reads.tail("A", 1)
    assert store.afters == [{"A": 4}, {"A": 1}], "a second read, from further back"
    assert [t.seq for t in earlier.ticks] == [2, 3, 4, 5]


async def test_kept_ticks_expire_and_are_forgotten(store: CountingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    reads = HistoryReads(store, 10, WINDOW, clock=lambda: now[0])
    await reads.tail("A", 2)
    assert "A" in reads.recent
    now[0] += KEEP + 1
    await reads.tail("B", 0)  # a read of another symbol sweeps what nobody used for KEEP seconds
    assert "A" not in reads.recent and "B" in reads.recent
    reads.forget("B")
    assert reads.recent == {}


async def test_a_request_made_while_a_read_is_in_flight_waits_for_the_next_read(store: CountingStore) -> None:
    store.gate = asyncio.Event()
    reads = HistoryReads(store, 10, WINDOW)
    first = asyncio.create_task(reads.tail("A", 0))
    await store.called.wait()
    second = asyncio.create_task(reads.tail("A", 0))  # the first read has started: it cannot see this one
    await asyncio.sleep(WINDOW * 2)
    assert len(store.calls) == 2, "a second read, after its own window"
    store.gate.set()
    await asyncio.gather(first, second)
    assert reads.stats.reads == 2


async def test_a_failed_read_fails_every_waiter(store: CountingStore) -> None:
    store.fail = ConnectionError("store down")
    reads = HistoryReads(store, 10, WINDOW)
    results = await asyncio.gather(reads.tail("A", 0), reads.tail("A", 0), reads.tail("B", 0), return_exceptions=True)
    assert len(store.calls) == 1
    assert all(isinstance(r, ConnectionError) and str(r) == "store down" for r in results), results
    store.fail = None
    assert (await reads.tail("A", 0)).last_seq == 5, "the next read works again"


async def test_a_read_that_times_out_fails_every_waiter(store: CountingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recovery_module, "READ_TIMEOUT", 0.02)
    store.gate = asyncio.Event()  # never set: the store hangs
    reads = HistoryReads(store, 10, WINDOW)
    results = await asyncio.gather(reads.tail("A", 0), reads.tail("B", 0), return_exceptions=True)
    assert all(isinstance(r, TimeoutError) for r in results), results


async def test_a_failed_read_nobody_waits_for_is_not_reported_as_unretrieved(
    store: CountingStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.fail = ConnectionError("store down")
    reads = HistoryReads(store, 10, WINDOW)
    waiter = asyncio.create_task(reads.tail("A", 0))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(WINDOW * 3)
    assert store.calls == [["A"]], "the read goes ahead"
    del waiter
    store.fail = None  # its traceback holds the read's futures
    gc.collect()
    assert "exception was never retrieved" not in caplog.text


async def test_a_cancelled_waiter_does_not_cancel_the_others(store: CountingStore) -> None:
    reads = HistoryReads(store, 10, WINDOW)
    gone = asyncio.create_task(reads.tail("A", 0))
    staying = asyncio.create_task(reads.tail("A", 0))
    other = asyncio.create_task(reads.tail("B", 0))
    await asyncio.sleep(0)
    gone.cancel()
    assert (await staying).last_seq == 5 and (await other).last_seq == 3
    assert gone.cancelled()
    assert store.calls == [["A", "B"]]


async def test_stop_cancels_a_read_in_flight_and_fails_its_waiters(store: CountingStore) -> None:
    store.gate = asyncio.Event()
    reads = HistoryReads(store, 10, WINDOW)
    waiter = asyncio.create_task(reads.tail("A", 0))
    await store.called.wait()
    reads.stop()
    with pytest.raises(ConnectionError, match="cancelled"):
        await waiter


def test_the_default_window_is_short() -> None:
    assert 0 < recovery_module.WINDOW <= 0.01 and recovery_module.READ_TIMEOUT > 0


async def test_a_shared_read_goes_back_only_to_the_lowest_since(store: CountingStore) -> None:
    reads = HistoryReads(store, 10, WINDOW)
    low, high = await asyncio.gather(reads.tail("A", 3), reads.tail("A", 4))
    assert store.afters == [{"A": 3}], "one read, from the lowest since"
    assert low is high and [t.seq for t in low.ticks] == [4, 5], "only what the requesters missed"
    assert (low.first_seq, low.last_seq) == (1, 5)


async def test_a_later_read_does_not_keep_an_earlier_reads_ticks_with_a_hole(store: CountingStore) -> None:
    """Read 1 is in flight when a request from further back starts read 2. Read 1 must not
    seed the ticks kept for read 2 (which misses what read 1's own keeping saw): a request
    served from memory afterwards gets every seq, without a hole."""
    store.gate = asyncio.Event()
    reads = HistoryReads(store, 100, WINDOW)
    first = asyncio.create_task(reads.tail("A", 4))
    await store.called.wait()
    for kept in await store.append([draft("A")]):  # seq 6, delivered while read 1 waits
        reads.saw(kept)
    second = asyncio.create_task(reads.tail("A", 1))  # not covered: read 2
    for _ in range(100):  # until read 2 has started
        if len(store.calls) == 2:
            break
        await asyncio.sleep(WINDOW)
    for kept in await store.append([draft("A")]):  # seq 7, delivered while both wait
        reads.saw(kept)
    store.gate.set()
    await asyncio.gather(first, second)
    later = await reads.tail("A", 1)
    assert [t.seq for t in later.ticks] == [2, 3, 4, 5, 6, 7], "every seq after since, no hole"
    assert reads.stats.reads == 2


async def test_nothing_kept_does_not_cover_a_request_from_further_back(store: CountingStore) -> None:
    reads = HistoryReads(store, 10, WINDOW)
    nothing = await reads.tail("A", 5)  # the client holds the last seq: nothing after it
    assert nothing.ticks == [] and nothing.last_seq == 5
    behind = await reads.tail("A", 2)
    assert [t.seq for t in behind.ticks] == [3, 4, 5] and len(store.calls) == 2, "read, not the empty memory"
    assert (await reads.tail("A", 5)).ticks == []


def test_check_says_why_recovery_is_refused() -> None:
    assert check(history(1, 10), 6, "e0", 100) == (None, "epoch")
    assert check(history(1, 10), 11, None, 100) == (None, "ahead")
    assert check(history(1, 10), 4, None, 5) == (None, "too_many")
    assert check(history(5, 10), 3, None, 100) == (None, "too_old")
    ticks, why = check(history(1, 10), 6, None, 100)
    assert seqs(ticks) == [7, 8, 9, 10] and why is None
