"""Outbox: bounded, seq only increases per symbol, conflation keeps the latest and counts
what it stands in for (`conflated`), recovered ticks merge with pending live ones."""

from __future__ import annotations

import functools
import itertools

from hypothesis import given
from hypothesis import strategies as st

from marketstream.core.losses import Losses
from marketstream.core.outbox import Outbox
from marketstream.core.tick import EncodedTick
from tests.unit.core.fakes import tick


@functools.cache
def t(symbol: str, seq: int) -> EncodedTick:
    """One tick per (symbol, seq), as the hub has it: shared by every outbox."""
    return tick(symbol, seq)


def taken(box: Outbox) -> list[tuple[str, int]]:
    return [(x.symbol, x.seq) for x in box.take_ticks()]


def counted(box: Outbox) -> list[tuple[str, int, int]]:
    """(symbol, seq, conflated) of the pending ticks, taken; `conflated` read from the bytes."""
    return [(x.symbol, x.seq, x.decode().get("conflated", 0)) for x in box.take_ticks()]


def test_old_and_duplicate_seq_are_dropped() -> None:
    box = Outbox(10)
    assert box.put(t("A", 2))
    assert not box.put(t("A", 2))
    assert not box.put(t("A", 1))
    assert box.put(t("A", 3))
    assert taken(box) == [("A", 2), ("A", 3)]
    assert not box.put(t("A", 3)), "seq is remembered after the ticks left"


def test_put_latest_drops_old_and_duplicate_seq_too() -> None:
    box = Outbox(10)
    assert box.put(t("A", 2))
    assert not box.put_latest(t("A", 2))
    assert not box.put_latest(t("A", 1))
    assert box.put_latest(t("A", 3))
    assert taken(box) == [("A", 2), ("A", 3)]


def test_overflow_conflates_to_latest_per_symbol() -> None:
    box = Outbox(3)
    for seq in range(1, 4):
        box.put(t("A", seq))
    box.put(t("B", 1))
    assert len(box) == 2
    assert box.conflations == 1
    assert sorted(counted(box)) == [("A", 3, 2), ("B", 1, 0)], "A3 stands in for A1 and A2"


def test_conflation_keeps_a_newer_replaceable_tick() -> None:
    box = Outbox(10)
    box.put(t("A", 1))
    box.put_latest(t("A", 2))
    box.conflate()
    assert counted(box) == [("A", 2, 1)]


def test_put_latest_replaces_a_pending_tick() -> None:
    box = Outbox(10)
    box.put_latest(t("A", 1))
    box.put_latest(t("A", 5))
    assert counted(box) == [("A", 5, 4)], "5 stands in for 1 (pending, replaced) and 2..4"


def test_ordered_tick_after_a_replaceable_one_keeps_seq_order() -> None:
    box = Outbox(10)
    box.put_latest(t("A", 1))  # throttled, then the throttle changed to 0
    box.put(t("A", 2))
    assert taken(box) == [("A", 1), ("A", 2)]


def test_snapshot_takes_the_newest_of_stored_and_pending_ticks() -> None:
    box = Outbox(10)
    box.put(t("A", 4))
    box.put(t("A", 6))
    box.put_latest(t("B", 2))
    box.put(t("D", 1))
    accepted = box.accept_snapshot([t("A", 5), t("B", 3), t("C", 1)])
    assert [(x.symbol, x.seq) for x in accepted] == [("A", 6), ("B", 3), ("C", 1)]
    assert taken(box) == [("D", 1)], "pending ticks of the snapshot's symbols are merged into it"
    assert not box.put(t("C", 1))
    assert not box.put(t("A", 6))


def test_snapshot_older_than_what_was_sent_is_not_sent() -> None:
    box = Outbox(10)
    box.put(t("A", 9))
    box.take_ticks()
    assert box.accept_snapshot([t("A", 8)]) == []


def test_snapshot_equal_to_what_was_sent_is_not_sent() -> None:
    box = Outbox(10)
    box.put(t("A", 9))
    box.take_ticks()
    assert box.accept_snapshot([t("A", 9)]) == []


def test_a_pending_tick_newer_than_the_stored_snapshot_becomes_the_snapshot() -> None:
    box = Outbox(10)
    box.put_latest(t("A", 9))
    assert [(x.symbol, x.seq) for x in box.accept_snapshot([t("A", 8)])] == [("A", 9)]
    assert not box
    assert box.last_seq == {"A": 9}


def test_discard_drops_pending_ticks_of_symbols() -> None:
    box = Outbox(10)
    box.put(t("A", 1))
    box.put(t("B", 1))
    box.put_latest(t("C", 1))
    box.discard(["A", "C"])
    assert taken(box) == [("B", 1)]
    assert not box.put(t("A", 1)), "their seq is kept"


def test_controls_are_kept_in_order() -> None:
    box = Outbox(10)
    box.add_control(b"1")
    box.add_control(b"2")
    assert list(box.controls) == [b"1", b"2"]
    assert box
    assert box.take_control() == b"1" and box.take_control() == b"2"
    assert not box


def test_len_counts_ticks_and_bool_counts_everything() -> None:
    box = Outbox(10)
    assert len(box) == 0 and not box
    box.add_control(b"x")
    assert len(box) == 0 and box
    box.put(t("A", 1))
    box.put_latest(t("B", 1))
    assert len(box) == 2


# -- accounted conflation ------------------------------------------------------------------


def test_put_latest_counts_the_ticks_since_the_last_one() -> None:
    box = Outbox(10)
    assert box.put_latest(t("A", 3))
    assert counted(box) == [("A", 3, 0)], "the first tick of a symbol accounts for nothing"
    assert box.put_latest(t("A", 4))
    assert counted(box) == [("A", 4, 0)], "the next seq: nothing conflated, no field"
    assert box.put_latest(t("A", 9))
    assert counted(box) == [("A", 9, 4)]


def test_a_replaced_pending_tick_carries_its_count_over() -> None:
    box = Outbox(10)
    box.put(t("A", 1))
    box.take_ticks()
    box.put_latest(t("A", 4))  # stands in for 2, 3
    assert box.latest["A"].conflated == 2
    box.put_latest(t("A", 7))  # for 2, 3, 4 (replaced), 5, 6
    assert counted(box) == [("A", 7, 5)]


def test_put_latest_does_not_count_what_was_lost_before_the_hub() -> None:
    losses = Losses()
    box = Outbox(10, losses)
    box.put_latest(t("A", 1))
    box.take_ticks()
    losses.record("A", 3, 4)
    box.put_latest(t("A", 6))  # 2 and 5 conflated, 3 and 4 lost
    assert box.latest["A"].conflated == 2
    losses.record("A", 8, 8)
    box.put_latest(t("A", 10))  # and 6 (replaced), 7, 9
    assert counted(box) == [("A", 10, 5)]
    assert losses.between("A", 1, 10) == 3


def test_an_outbox_has_losses_of_its_own_by_default() -> None:
    assert Outbox(1).losses.between("A", 0, 10) == 0


def test_a_tick_that_counts_shares_the_encoding_of_its_count() -> None:
    a, b = Outbox(10), Outbox(10)
    for box in (a, b):
        box.put_latest(t("A", 1))
        box.take_ticks()
        box.put_latest(t("A", 5))
    assert a.latest["A"] is b.latest["A"], "one variant per count, shared by the outboxes"
    assert a.latest["A"].base.msgpack == t("A", 5).msgpack


def test_conflate_counts_per_symbol() -> None:
    box = Outbox(100)
    for seq in (1, 2, 3):
        box.put(t("A", seq))
    box.put(t("B", 7))
    box.put(t("C", 1))
    box.put(t("C", 2))
    box.conflate()
    assert box.conflations == 1 and box.ticks == []
    assert counted(box) == [("A", 3, 2), ("B", 7, 0), ("C", 2, 1)]


def test_conflate_adds_to_a_newer_tick_in_latest() -> None:
    box = Outbox(100)
    box.put(t("A", 1))
    box.put(t("A", 2))
    box.put_latest(t("A", 5))  # 3, 4 conflated
    box.conflate()  # 1 and 2 are dropped too
    assert counted(box) == [("A", 5, 4)]


def test_conflate_counts_what_a_dropped_tick_stood_in_for() -> None:
    box = Outbox(100)
    box.put(t("A", 1))
    box.take_ticks()
    box.put_latest(t("A", 4))  # 2, 3
    box.put(t("A", 5))  # the latest tick moves into the ordered ticks, count and all
    box.put(t("A", 6))
    box.conflate()  # 6 stands in for 4 (and its 2, 3) and 5
    assert counted(box) == [("A", 6, 4)]


def test_conflate_twice_adds_up() -> None:
    box = Outbox(100)
    for seq in (1, 2, 3):
        box.put(t("A", seq))
    box.conflate()
    box.put(t("A", 4))
    box.put(t("A", 5))
    box.conflate()  # 5 for 3 (which stood for 1, 2) and 4
    assert counted(box) == [("A", 5, 4)]
    assert box.conflations == 2


def test_overflow_keeps_each_symbols_count() -> None:
    box = Outbox(4)
    for seq in (1, 2, 3):
        box.put(t("A", seq))
    box.put(t("B", 1))
    box.put(t("B", 2))  # the 5th tick: conflate
    assert counted(box) == [("A", 3, 2), ("B", 2, 1)]


# -- recovery ------------------------------------------------------------------------------


def test_accept_recovery_returns_the_recovered_ticks_and_sets_the_seq_filter() -> None:
    box = Outbox(10)
    merged = box.accept_recovery("A", 2, [t("A", 3), t("A", 4)])
    assert [(x.symbol, x.seq) for x in merged] == [("A", 3), ("A", 4)]
    assert box.last_seq == {"A": 4} and not box
    assert not box.put(t("A", 4)) and box.put(t("A", 5))


def test_accept_recovery_merges_the_pending_live_ticks() -> None:
    box = Outbox(10)
    box.put(t("A", 4))  # live ticks that arrived while history was read
    box.put(t("A", 5))
    box.put(t("A", 6))
    box.put(t("B", 1))
    merged = box.accept_recovery("A", 2, [t("A", 3), t("A", 4), t("A", 5)])
    assert [x.seq for x in merged] == [3, 4, 5, 6], "each seq once, in order"
    assert box.last_seq["A"] == 6
    assert taken(box) == [("B", 1)], "the other symbols' ticks stay pending"


def test_accept_recovery_merges_a_pending_latest_tick_without_its_count() -> None:
    box = Outbox(10)
    box.put_latest(t("A", 5))
    box.put_latest(t("A", 8))
    merged = box.accept_recovery("A", 2, [t("A", 3), t("A", 4), t("A", 5), t("A", 6)])
    assert [(x.seq, x.conflated) for x in merged] == [(3, 0), (4, 0), (5, 0), (6, 0), (8, 0)]
    assert merged[-1].msgpack == t("A", 8).msgpack, "the base tick: the caller counts"
    assert not box


def test_accept_recovery_with_nothing_missed_starts_from_since() -> None:
    box = Outbox(10)
    assert box.accept_recovery("A", 7, []) == []
    assert box.last_seq == {"A": 7}
    assert not box.put(t("A", 7)) and box.put(t("A", 8))


def test_accept_recovery_with_nothing_missed_keeps_the_newer_live_ticks() -> None:
    box = Outbox(10)
    box.put(t("A", 7))
    box.put(t("A", 8))
    merged = box.accept_recovery("A", 7, [])
    assert [x.seq for x in merged] == [8], "7 is what the client holds"
    assert box.last_seq == {"A": 8}


ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "latest", "take", "snapshot", "discard"]), st.sampled_from("ABC"), st.integers(1, 40)
    ),
    max_size=200,
)


@given(ops, st.integers(1, 8))
def test_any_sequence_of_operations_keeps_seq_increasing_and_bounded(
    script: list[tuple[str, str, int]], bound: int
) -> None:
    box = Outbox(bound)
    delivered: list[tuple[str, int]] = []
    for op, symbol, seq in script:
        if op == "put":
            box.put(t(symbol, seq))
        elif op == "latest":
            box.put_latest(t(symbol, seq))
        elif op == "snapshot":
            # a snapshot frame leaves before the ticks still pending (it is a control)
            delivered.extend((x.symbol, x.seq) for x in box.accept_snapshot([t(symbol, seq)]))
        elif op == "discard":
            box.discard([symbol])
        else:
            delivered.extend(taken(box))
        assert len(box.ticks) <= bound
        assert len(box) <= bound + 3
    delivered.extend(taken(box))
    for symbol in "ABC":
        seqs = [s for sym, s in delivered if sym == symbol]
        assert seqs == sorted(set(seqs)), f"{symbol}: {seqs}"


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[str, str, int, int]]:
    """Operations on one outbox: ticks received by the hub (some lost before it, some
    merged by a throttle bucket before they reach the outbox), takes and conflations."""
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(["put", "latest", "take", "conflate"]),
                st.sampled_from("AB"),
                st.integers(0, 3),  # seqs lost before the hub first
                st.integers(0, 3),  # then seqs received but not offered (latest only)
            ),
            max_size=120,
        )
    )


@given(streams(), st.integers(1, 6))
def test_seq_minus_previous_minus_one_minus_conflated_is_what_was_lost(
    script: list[tuple[str, str, int, int]], bound: int
) -> None:
    """PROTOCOL.md: for each symbol, `seq - previous_seq - 1 - conflated` is the number of
    ticks lost before the hub, whatever mix of ordered puts, throttled puts, slow-client
    conflation and takes the ticks went through."""
    losses = Losses()
    box = Outbox(bound, losses)
    received = {"A": 0, "B": 0}  # the last seq the hub received (or lost) per symbol
    delivered: list[EncodedTick] = []
    for op, symbol, lost, unoffered in script:
        if op == "take":
            delivered.extend(box.take_ticks())
            continue
        if op == "conflate":
            box.conflate()
            continue
        if lost:
            losses.record(symbol, received[symbol] + 1, received[symbol] + lost)
            received[symbol] += lost
        if op == "latest":
            received[symbol] += unoffered  # merged in a bucket: never offered to this outbox
            received[symbol] += 1
            assert box.put_latest(t(symbol, received[symbol]))
        else:
            received[symbol] += 1
            assert box.put(t(symbol, received[symbol]))
        assert len(box.ticks) <= bound
    delivered.extend(box.take_ticks())
    for symbol in "AB":
        mine = [x for x in delivered if x.symbol == symbol]
        for prev, cur in itertools.pairwise(mine):
            assert cur.seq > prev.seq
            assert cur.decode().get("conflated", 0) == cur.conflated
            assert cur.seq - prev.seq - 1 - cur.conflated == losses.between(symbol, prev.seq, cur.seq), (
                f"{symbol}: {prev!r} then {cur!r}"
            )


@given(streams(), st.integers(1, 6))
def test_the_conflated_counter_is_the_sum_of_conflated_on_the_ticks_taken(
    script: list[tuple[str, str, int, int]], bound: int
) -> None:
    """`Outbox.conflated` (marketstream_ticks_conflated_total) counts each superseded tick
    once: once everything is taken, it equals the sum of `conflated` the ticks carry."""
    losses = Losses()
    box = Outbox(bound, losses)
    received = {"A": 0, "B": 0}
    delivered: list[EncodedTick] = []
    for op, symbol, lost, unoffered in script:
        if op == "take":
            delivered.extend(box.take_ticks())
        elif op == "conflate":
            box.conflate()
        else:
            if lost:
                losses.record(symbol, received[symbol] + 1, received[symbol] + lost)
                received[symbol] += lost
            received[symbol] += 1 + (unoffered if op == "latest" else 0)
            (box.put_latest if op == "latest" else box.put)(t(symbol, received[symbol]))
    delivered.extend(box.take_ticks())
    assert box.conflated == sum(x.conflated for x in delivered)
