"""Losses: seq ranges the hub never received, per symbol, and how many lie between two seqs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from marketstream.core import losses as losses_module
from marketstream.core.losses import Losses


def test_nothing_lost() -> None:
    losses = Losses()
    assert losses.between("A", 0, 100) == 0


def test_between_counts_seqs_strictly_between() -> None:
    losses = Losses()
    losses.record("A", 5, 7)
    assert losses.between("A", 4, 8) == 3
    assert losses.between("A", 5, 7) == 1, "the bounds themselves are not counted"
    assert losses.between("A", 0, 100) == 3
    assert losses.between("A", 6, 100) == 1
    assert losses.between("A", 0, 6) == 1
    assert losses.between("A", 7, 100) == 0
    assert losses.between("A", 0, 5) == 0
    assert losses.between("A", 10, 5) == 0, "an empty span"


def test_single_seqs_and_several_ranges() -> None:
    losses = Losses()
    losses.record("A", 3, 3)
    losses.record("A", 10, 12)
    assert losses.between("A", 2, 4) == 1
    assert losses.between("A", 0, 20) == 4
    assert losses.between("A", 3, 11) == 1


def test_an_empty_range_is_not_recorded() -> None:
    losses = Losses()
    losses.record("A", 5, 4)
    assert losses.between("A", 0, 100) == 0


def test_ranges_are_per_symbol() -> None:
    losses = Losses()
    losses.record("A", 1, 2)
    losses.record("B", 5, 5)
    assert (losses.between("A", 0, 10), losses.between("B", 0, 10), losses.between("C", 0, 10)) == (2, 1, 0)


def test_reset_forgets_a_symbols_ranges() -> None:
    losses = Losses()
    losses.record("A", 1, 2)
    losses.record("B", 1, 2)
    losses.reset("A")
    losses.reset("NONE")
    assert (losses.between("A", 0, 10), losses.between("B", 0, 10)) == (0, 2)


def test_old_ranges_are_forgotten_past_max_ranges() -> None:
    losses = Losses()
    n = losses_module.MAX_RANGES
    for i in range(n + 1):
        losses.record("A", 10 * i, 10 * i)
    assert losses.between("A", -1, 1) == 0, "the oldest range is forgotten"
    assert losses.between("A", -1, 10 * n + 1) == n


@given(st.lists(st.tuples(st.integers(1, 60), st.integers(0, 5)), max_size=10), st.integers(0, 70), st.integers(0, 70))
def test_between_is_a_count_of_the_lost_seqs(ranges: list[tuple[int, int]], after: int, before: int) -> None:
    losses = Losses()
    lost: set[int] = set()
    disjoint: list[tuple[int, int]] = []
    for first, length in ranges:
        last = first + length
        if any(a <= last and first <= b for a, b in disjoint):
            continue  # the hub records each seq at most once
        disjoint.append((first, last))
        losses.record("A", first, last)
        lost.update(range(first, last + 1))
    assert losses.between("A", after, before) == len([s for s in lost if after < s < before])
