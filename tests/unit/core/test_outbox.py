"""Outbox: bounded, seq only increases per symbol, conflation keeps the latest."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from marketstream.core.outbox import Outbox
from marketstream.core.tick import EncodedTick


def t(symbol: str, seq: int) -> EncodedTick:
    return EncodedTick(symbol, seq, b"", b"")


def taken(box: Outbox) -> list[tuple[str, int]]:
    return [(x.symbol, x.seq) for x in box.take_ticks()]


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
    assert sorted(taken(box)) == [("A", 3), ("B", 1)]


def test_conflation_keeps_a_newer_replaceable_tick() -> None:
    box = Outbox(10)
    box.put(t("A", 1))
    box.put_latest(t("A", 2))
    box.conflate()
    assert taken(box) == [("A", 2)]


def test_put_latest_replaces_a_pending_tick() -> None:
    box = Outbox(10)
    box.put_latest(t("A", 1))
    box.put_latest(t("A", 5))
    assert taken(box) == [("A", 5)]


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
