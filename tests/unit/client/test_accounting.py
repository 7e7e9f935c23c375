"""Per-symbol seq accounting: conflated, lost and missed seqs; epochs and resets; `since`."""

from __future__ import annotations

from typing import Any

from marketstream.client.accounting import Accounting


def tick(symbol: str, seq: int, conflated: int = 0) -> dict[str, Any]:
    t: dict[str, Any] = {"symbol": symbol, "seq": seq, "ts": 1, "price": 1.0, "size": 1.0, "bid": 1.0, "ask": 1.1}
    if conflated:
        t["conflated"] = conflated
    return t


def test_conflated_seqs_are_not_lost_and_skipped_ones_are() -> None:
    a = Accounting()
    assert a.tick(tick("AAPL", 10), snapshot=True) is not None
    a.tick(tick("AAPL", 11))
    t = a.tick(tick("AAPL", 15, conflated=3))
    assert t is not None and t.conflated == 3 and t.lost == 0
    t = a.tick(tick("AAPL", 20, conflated=1))
    assert t is not None and t.lost == 3
    s = a.stats("AAPL")
    assert (s.ticks, s.conflated, s.lost, s.missed, s.gaps, s.last_seq) == (4, 4, 3, 0, 3, 20)


def test_the_first_tick_anchors_and_a_seq_that_does_not_increase_is_dropped() -> None:
    a = Accounting()
    assert a.tick(tick("X", 500)) is not None, "the first tick: no gap counted before it"
    assert a.tick(tick("X", 500)) is None and a.tick(tick("X", 3)) is None
    assert a.stats("X").duplicates == 2 and a.stats("X").lost == 0


def test_a_failed_recovery_counts_the_jump_to_the_snapshot_as_missed() -> None:
    a = Accounting()
    a.epochs({"X": "e1"})
    a.tick(tick("X", 10))
    assert a.since(["X", "Y"]) == {"X": {"seq": 10, "epoch": "e1"}}
    a.recovered({"X": False})
    assert a.tick(tick("X", 10), snapshot=True) is None, "the snapshot may repeat what is held"
    assert a.stats("X").duplicates == 0
    t = a.tick(tick("X", 50), snapshot=True)
    assert t is not None and t.lost == 39 and t.epoch == "e1"
    assert (a.stats("X").missed, a.stats("X").lost) == (39, 0)
    a.tick(tick("X", 52))
    assert a.stats("X").lost == 1, "after the snapshot, skipped seqs are upstream losses again"


def test_a_new_epoch_restarts_the_count() -> None:
    a = Accounting()
    assert a.epochs({"X": "e1"}) == []
    a.tick(tick("X", 100))
    assert a.epochs({"X": "e2"}) == ["X"], "an ack with another epoch than the one held"
    assert a.tick(tick("X", 1)) is not None and a.stats("X").lost == 0
    a.reset("X", "e3")
    assert a.since(["X"]) == {}, "nothing held in the new epoch yet"
    assert a.tick(tick("X", 1)) is not None
    s = a.stats("X")
    assert (s.resets, s.epoch, s.last_seq, s.lost) == (2, "e3", 1, 0)


def test_unsubscribed_symbols_start_a_new_count_and_are_not_recovered() -> None:
    a = Accounting()
    a.tick(tick("X", 5))
    a.unsubscribed(["X"])
    assert a.since(["X"]) == {}
    assert a.tick(tick("X", 90)) is not None and a.stats("X").lost == 0
    assert a.since(["X"]) == {"X": 90}, "the seq alone while no epoch is known"
