"""Inbound: each received tick checked against its symbol's epoch and seq; gaps filled from
history (a MemoryStore's), what history lacks recorded as lost, new epochs reset."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from marketstream.core import inbound as inbound_module
from marketstream.core.inbound import Inbound
from marketstream.core.losses import Losses
from marketstream.core.stats import Stats
from marketstream.core.store import History, MemoryStore
from marketstream.core.tick import EncodedTick
from tests.unit.core.fakes import draft, settle, tick


class Rig:
    """An Inbound on a MemoryStore, recording what it delivers and resets."""

    def __init__(self, history_length: int = 2000) -> None:
        self.store = MemoryStore(history_length)
        self.delivered: list[EncodedTick] = []
        self.resets: list[tuple[str, str]] = []
        self.losses = Losses()
        self.stats = Stats()
        self.inbound = Inbound(
            self.store, self.delivered.append, lambda s, e: self.resets.append((s, e)), self.losses, self.stats
        )

    async def publish(self, symbol: str, n: int) -> list[EncodedTick]:
        return await self.store.append([draft(symbol) for _ in range(n)])

    def receive(self, ticks: Sequence[EncodedTick]) -> None:
        for x in ticks:
            self.inbound.on_tick(x)

    async def filled(self) -> None:
        """Wait until every gap fill in flight is done."""
        while self.inbound._filling:
            await asyncio.wait_for(asyncio.gather(*self.inbound._filling, return_exceptions=True), 1.0)

    def seqs(self, symbol: str | None = None) -> list[int]:
        """The seqs delivered (of `symbol`), taken."""
        found = [x.seq for x in self.delivered if symbol is None or x.symbol == symbol]
        self.delivered.clear()
        return found


@pytest.fixture
def rig() -> Rig:
    return Rig()


async def test_ticks_in_order_are_delivered_at_once(rig: Rig) -> None:
    ticks = await rig.publish("A", 3)
    rig.receive(ticks)
    assert [x for x in rig.delivered] == ticks, "the very ticks, in order"
    assert rig.inbound.symbols["A"].seq == 3 and rig.inbound.symbols["A"].epoch == ticks[0].epoch
    assert (rig.stats.duplicates, rig.stats.ticks_filled, rig.stats.ticks_lost, rig.stats.resets) == (0, 0, 0, 0)


async def test_the_first_tick_of_a_symbol_may_have_any_seq(rig: Rig) -> None:
    ticks = await rig.publish("A", 10)
    rig.receive(ticks[6:])
    assert rig.seqs() == [7, 8, 9, 10], "this hub joined the symbol at 7: nothing to fill"


async def test_symbols_are_independent(rig: Rig) -> None:
    a = await rig.publish("A", 2)
    b = await rig.publish("B", 2)
    rig.receive([a[0], b[0], a[1], b[1]])
    assert [(x.symbol, x.seq) for x in rig.delivered] == [("A", 1), ("B", 1), ("A", 2), ("B", 2)]


async def test_a_duplicate_is_dropped(rig: Rig) -> None:
    ticks = await rig.publish("A", 3)
    rig.receive([ticks[0], ticks[1], ticks[1], ticks[0], ticks[2], ticks[2]])
    assert rig.seqs() == [1, 2, 3]
    assert rig.stats.duplicates == 3


async def test_a_gap_is_held_and_filled_from_history_then_the_held_ticks(rig: Rig) -> None:
    ticks = await rig.publish("A", 8)
    rig.receive(ticks[:2])
    rig.receive([ticks[4], ticks[5]])  # 3 and 4 were dropped on the way
    assert rig.seqs() == [1, 2], "5 and 6 are held while history is read"
    assert rig.inbound.symbols["A"].held == [ticks[4], ticks[5]]
    await rig.filled()
    assert rig.seqs() == [3, 4, 5, 6], "no gap, in order"
    assert rig.delivered == [] and rig.stats.ticks_filled == 2
    assert rig.inbound.symbols["A"].held is None and rig.stats.ticks_lost == 0
    rig.receive(ticks[6:])
    assert rig.seqs() == [7, 8]


async def test_ticks_that_arrive_during_a_fill_are_held_too(rig: Rig) -> None:
    ticks = await rig.publish("A", 6)
    rig.receive([ticks[0], ticks[3]])
    rig.receive([ticks[4], ticks[2], ticks[3], ticks[5]])  # late 3, a duplicate 4
    assert rig.seqs() == [1]
    await rig.filled()
    assert rig.seqs() == [2, 3, 4, 5, 6], "each seq once"
    assert rig.stats.duplicates == 2


async def test_other_symbols_flow_during_a_fill(rig: Rig) -> None:
    a = await rig.publish("A", 3)
    b = await rig.publish("B", 2)
    rig.receive([a[0], a[2], b[0], b[1]])
    assert [(x.symbol, x.seq) for x in rig.delivered] == [("A", 1), ("B", 1), ("B", 2)]
    rig.delivered.clear()
    await rig.filled()
    assert rig.seqs() == [2, 3]


async def test_what_history_no_longer_holds_is_lost() -> None:
    rig = Rig(history_length=3)
    ticks = await rig.publish("A", 10)
    rig.receive(ticks[:2])
    rig.receive([ticks[9]])  # 3..9 missed; history holds 8..10 only
    await rig.filled()
    assert rig.seqs() == [1, 2, 8, 9, 10]
    assert rig.stats.ticks_lost == 5 and rig.stats.ticks_filled == 2
    assert rig.losses.between("A", 2, 8) == 5 and rig.losses.between("A", 7, 100) == 0


async def test_a_gap_inside_history_is_lost_and_the_rest_filled(rig: Rig) -> None:
    ticks = await rig.publish("A", 7)
    store = rig.store
    store.ticks["A"] = type(store.ticks["A"])([x for x in store.ticks["A"] if x.seq != 4], maxlen=2000)
    rig.receive([ticks[0], ticks[6]])
    await rig.filled()
    assert rig.seqs() == [1, 2, 3, 5, 6, 7]
    assert rig.stats.ticks_lost == 1 and rig.losses.between("A", 0, 100) == 1
    assert rig.losses.between("A", 3, 5) == 1


async def test_a_history_of_another_epoch_fills_nothing(rig: Rig) -> None:
    ticks = await rig.publish("A", 5)
    rig.receive([ticks[0]])
    rig.store.forget("A")  # the store lost the symbol: its history is of a new epoch
    await rig.publish("A", 5)
    rig.receive([ticks[4]])
    await rig.filled()
    assert rig.seqs() == [1, 5]
    assert rig.stats.ticks_lost == 3 and rig.losses.between("A", 1, 5) == 3
    assert rig.resets == []


async def test_a_failed_history_read_is_retried(rig: Rig) -> None:
    ticks = await rig.publish("A", 5)
    failures = [ConnectionError("the connection died with the link")]
    real = rig.store.history

    async def flaky(symbol: str, after_seq: int | None, limit: int) -> History:
        if failures:
            raise failures.pop()
        return await real(symbol, after_seq, limit)

    rig.store.history = flaky  # type: ignore[method-assign]
    rig.receive([ticks[0], ticks[3], ticks[4]])
    await rig.filled()
    assert rig.seqs() == [1, 2, 3, 4, 5]
    assert rig.stats.ticks_filled == 2 and rig.stats.ticks_lost == 0


async def test_a_history_read_failing_until_the_timeout_counts_the_gap_lost(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(inbound_module, "FILL_TIMEOUT", 0.2)
    ticks = await rig.publish("A", 5)
    calls = 0

    async def broken(symbol: str, after_seq: int | None, limit: int) -> History:
        nonlocal calls
        calls += 1
        raise ConnectionError("store down")

    rig.store.history = broken  # type: ignore[method-assign]
    rig.receive([ticks[0], ticks[3], ticks[4]])
    await rig.filled()
    assert rig.seqs() == [1, 4, 5], "the held ticks are not kept back for ever"
    assert rig.stats.ticks_lost == 2 and rig.losses.between("A", 1, 4) == 2
    assert calls >= 2, "retried before giving up"
    assert "cannot read the history of A" in caplog.text


async def test_a_history_read_that_hangs_times_out(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inbound_module, "FILL_TIMEOUT", 0.02)
    ticks = await rig.publish("A", 4)

    async def hang(symbol: str, after_seq: int | None, limit: int) -> History:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    rig.store.history = hang  # type: ignore[method-assign]
    rig.receive([ticks[0], ticks[2]])
    await asyncio.sleep(0.1)
    assert rig.seqs() == [1, 3] and rig.stats.ticks_lost == 1


async def test_a_fill_gives_up_past_max_held(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inbound_module, "MAX_HELD", 3)
    ticks = await rig.publish("A", 8)
    gate = asyncio.Event()
    real = rig.store.history

    async def slow(symbol: str, after_seq: int | None, limit: int) -> History:
        await gate.wait()
        return await real(symbol, after_seq, limit)

    rig.store.history = slow  # type: ignore[method-assign]
    rig.receive([ticks[0], ticks[3], ticks[4], ticks[5]])
    assert rig.seqs() == [1], "3 held: not past the bound"
    rig.receive([ticks[6]])
    assert rig.seqs() == [4, 5, 6, 7], "past it: the gap counts as lost and the held ticks go"
    assert rig.stats.ticks_lost == 2 and rig.losses.between("A", 1, 4) == 2
    rig.receive([ticks[7]])
    assert rig.seqs() == [8]
    gate.set()
    await rig.filled()
    assert rig.seqs() == [] and rig.stats.ticks_filled == 0, "the late history changes nothing"


async def test_a_new_epoch_resets_and_the_seq_restarts(rig: Rig) -> None:
    old = await rig.publish("A", 5)
    rig.receive(old)
    rig.losses.record("A", 100, 101)
    rig.store.forget("A")
    new = await rig.publish("A", 2)
    rig.seqs()
    rig.receive(new)
    assert rig.resets == [("A", new[0].epoch)]
    assert rig.seqs() == [1, 2], "seq 1 of the new epoch is delivered, not taken for a duplicate"
    assert rig.stats.resets == 1 and rig.stats.duplicates == 0
    assert rig.losses.between("A", 0, 1000) == 0, "the old epoch's losses are forgotten"
    assert rig.inbound.symbols["A"].epoch == new[0].epoch


async def test_a_new_epoch_may_start_past_seq_1(rig: Rig) -> None:
    rig.receive([tick("A", 5, epoch="e1")])
    rig.receive([tick("A", 3, epoch="e2"), tick("A", 4, epoch="e2")])
    assert rig.resets == [("A", "e2")]
    assert rig.seqs() == [5, 3, 4], "the hub joined the new epoch at 3: nothing to fill"


async def test_a_new_epoch_stops_a_fill_in_flight(rig: Rig) -> None:
    old = await rig.publish("A", 5)
    rig.receive([old[0], old[3]])  # a fill of 2..3 starts
    rig.store.forget("A")
    new = await rig.publish("A", 2)
    rig.receive(new)
    await rig.filled()
    assert rig.seqs() == [1, 1, 2], "old 1, then the new epoch; the old held 4 is dropped"
    assert rig.resets == [("A", new[0].epoch)]
    assert rig.stats.ticks_filled == 0 and rig.stats.ticks_lost == 0


async def test_a_fill_of_the_old_epoch_does_not_end_a_fill_of_the_new_one(rig: Rig) -> None:
    """A fill in flight when the epoch changes belongs to the old epoch: when it returns,
    it must not release (and count as lost) a gap of the new epoch that history holds."""
    old = await rig.publish("A", 5)
    gate = asyncio.Event()
    reads: list[int | None] = []
    real = rig.store.history

    async def gated(symbol: str, after_seq: int | None, limit: int) -> History:
        reads.append(after_seq)
        await gate.wait()
        return await real(symbol, after_seq, limit)

    rig.store.history = gated  # type: ignore[method-assign]
    rig.receive([old[0], old[3]])  # the old epoch's fill of 2..3 starts its read, which waits
    (old_fill,) = rig.inbound._filling
    for _ in range(10):  # let the fill task start its read
        await asyncio.sleep(0)
    assert reads == [1], "the old fill is reading"
    rig.store.forget("A")
    new = await rig.publish("A", 4)
    rig.receive([new[0], new[3]])  # the new epoch: 1, then a gap 2..3 that history holds
    (new_fill,) = rig.inbound._filling - {old_fill}
    gate.set()  # both reads return the new epoch's history; the old fill must not use it
    await old_fill
    await new_fill
    assert [(x.epoch, x.seq) for x in rig.delivered] == [(old[0].epoch, 1)] + [(new[0].epoch, s) for s in (1, 2, 3, 4)]
    assert rig.stats.ticks_lost == 0 and rig.losses.between("A", 0, 100) == 0


async def test_forget_starts_the_symbol_afresh(rig: Rig) -> None:
    ticks = await rig.publish("A", 6)
    rig.receive(ticks[:2])
    rig.inbound.forget("A")
    rig.inbound.forget("NONE")
    assert "A" not in rig.inbound.symbols and "NONE" not in rig.inbound.symbols
    rig.receive([ticks[4], ticks[5]])
    assert rig.seqs() == [1, 2, 5, 6], "after a leave and a join: no gap to fill (the snapshot covers it)"
    await rig.filled()
    assert rig.delivered == [] and rig.stats.ticks_filled == 0 and rig.resets == []


async def test_a_new_epoch_before_the_first_tick_resets_who_was_told_the_old_one(rig: Rig) -> None:
    """A subscribe read the old epoch (its ack said so); the store lost the seq before the
    hub's first tick of the symbol: that tick must reset, not start the symbol silently."""
    old = await rig.publish("A", 5)
    assert rig.inbound.told("A", old[0].epoch) == old[0].epoch
    rig.store.forget("A")
    new = await rig.publish("A", 2)
    assert new[0].epoch != old[0].epoch
    rig.receive(new)
    assert rig.resets == [("A", new[0].epoch)]
    assert rig.seqs() == [1, 2], "seq 1 of the new epoch is delivered, not taken for a duplicate"


async def test_told_the_epoch_of_the_ticks_that_follow_changes_nothing(rig: Rig) -> None:
    ticks = await rig.publish("A", 5)
    assert rig.inbound.told("A", ticks[0].epoch) == ticks[0].epoch
    rig.receive(ticks[3:])
    assert rig.inbound.told("A", ticks[0].epoch) == ticks[0].epoch
    assert rig.seqs() == [4, 5] and rig.resets == [], "the first tick may be any seq: a snapshot covers the rest"


async def test_told_an_epoch_older_than_the_ticks_received_gives_theirs(rig: Rig) -> None:
    """Ticks of the new epoch came before the subscribe that read the old one returned:
    `told` says the live epoch (the subscriber is reset to it), and keeps it."""
    old = await rig.publish("A", 2)
    rig.store.forget("A")
    new = await rig.publish("A", 2)
    rig.receive(new[:1])
    assert rig.inbound.told("A", old[0].epoch) == new[0].epoch
    rig.receive(new[1:])
    assert rig.seqs() == [1, 2] and rig.resets == []


async def test_after_the_hub_left_the_next_subscriber_tells_the_epoch(rig: Rig) -> None:
    """The epoch changed while the hub was away (no subscriber here then): the next
    subscriber was told the new one by its ack, so its ticks need no reset."""
    old = await rig.publish("A", 2)
    rig.receive(old)
    rig.inbound.forget("A")
    rig.store.forget("A")
    new = await rig.publish("A", 2)
    assert rig.inbound.told("A", new[0].epoch) == new[0].epoch
    rig.receive(new)
    assert rig.resets == [] and rig.seqs() == [1, 2, 1, 2]


async def test_forget_during_a_fill_drops_it(rig: Rig) -> None:
    ticks = await rig.publish("A", 4)
    rig.receive([ticks[0], ticks[3]])
    rig.inbound.forget("A")
    await rig.filled()
    assert rig.seqs() == [1], "the fill of a symbol left is not delivered"
    assert rig.stats.ticks_lost == 0


async def test_stop_cancels_the_fills(rig: Rig) -> None:
    ticks = await rig.publish("A", 4)
    gate = asyncio.Event()

    async def hang(symbol: str, after_seq: int | None, limit: int) -> History:
        await gate.wait()
        return History()

    rig.store.history = hang  # type: ignore[method-assign]
    rig.receive([ticks[0], ticks[3]])
    await settle()
    (task,) = rig.inbound._filling  # waiting for history
    rig.inbound.stop()
    await settle()
    assert task.cancelled() and rig.inbound._filling == set()


def test_the_fill_bounds() -> None:
    assert inbound_module.FILL_TIMEOUT > 0 and inbound_module.MAX_HELD >= 1000
