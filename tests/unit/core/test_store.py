"""MemoryStore: the catalog, the seq authority (seq and epoch per symbol), each symbol's
last tick (snapshot) and its history, in one process."""

from __future__ import annotations

import pytest

from marketstream.core.store import History, MemoryStore, Store, new_epoch
from marketstream.core.symbols import SymbolInfo
from tests.unit.core.fakes import draft


async def test_register_and_known() -> None:
    store = MemoryStore()
    await store.register(["AAPL", "MSFT"])
    await store.register(iter(["EUR/USD"]))
    assert await store.known(["MSFT", "IBM", "EUR/USD", "AAPL"]) == [True, False, True, True]
    assert await store.known([]) == []


async def test_descriptions_keep_the_last_said_of_each_symbol() -> None:
    store = MemoryStore()
    assert await store.descriptions() == {}
    await store.describe({"AAPL": SymbolInfo("Apple", "equity", 1.0), "EUR/USD": SymbolInfo("Euro", "fx", 1.1)})
    await store.describe({"AAPL": SymbolInfo("Apple Inc.", "equity", 2.0)})
    await store.describe({})
    assert await store.descriptions() == {
        "AAPL": SymbolInfo("Apple Inc.", "equity", 2.0),
        "EUR/USD": SymbolInfo("Euro", "fx", 1.1),
    }


async def test_append_keeps_the_last_tick_and_catalogs_its_symbol() -> None:
    store = MemoryStore()
    await store.append([draft("AAPL"), draft("AAPL"), draft("MSFT")])
    snapshots = await store.snapshots(["AAPL", "MSFT", "IBM"])
    assert {s: t.seq for s, t in snapshots.items()} == {"AAPL": 2, "MSFT": 1}, "none for a symbol without ticks"
    assert await store.known(["AAPL", "MSFT"]) == [True, True]
    assert await store.append([]) == []


async def test_append_assigns_each_symbol_its_next_seq_in_order() -> None:
    store = MemoryStore()
    first = await store.append([draft("A", 1.0), draft("B", 2.0), draft("A", 3.0)])
    second = await store.append([draft("B", 4.0), draft("A", 5.0)])
    assert [(t.symbol, t.seq, t.decode()["price"]) for t in first + second] == [
        ("A", 1, 1.0),
        ("B", 1, 2.0),
        ("A", 2, 3.0),
        ("B", 2, 4.0),
        ("A", 3, 5.0),
    ]
    d = draft("A", 6.0)
    (third,) = await store.append([d])
    assert third.msgpack == d.complete(4, third.epoch).msgpack and third.json == d.complete(4).json, (
        "the draft's bytes and the seq"
    )


async def test_each_symbol_has_one_epoch_for_all_its_ticks() -> None:
    store = MemoryStore()
    ticks = await store.append([draft("A"), draft("B"), draft("A")])
    ticks += await store.append([draft("A")])
    a = [t.epoch for t in ticks if t.symbol == "A"]
    assert len(set(a)) == 1 and a[0], "one non-empty epoch"
    assert store.epochs == {"A": a[0], "B": ticks[1].epoch}
    assert ticks[1].epoch != a[0], "epochs are per symbol"
    assert (await store.snapshots(["A"]))["A"].epoch == a[0]


def test_new_epochs_are_short_and_differ() -> None:
    epochs = {new_epoch() for _ in range(100)}
    assert len(epochs) == 100 and all(0 < len(e) <= 16 for e in epochs)


async def test_catalog_lists_every_symbol_sorted_with_its_last_tick() -> None:
    store = MemoryStore()
    await store.register(["MSFT", "AAPL"])
    (_, last) = await store.append([draft("MSFT"), draft("MSFT")])
    assert await store.catalog() == {"AAPL": None, "MSFT": last}
    assert list(await store.catalog()) == ["AAPL", "MSFT"]


async def test_history_keeps_the_last_ticks_of_each_symbol() -> None:
    store = MemoryStore(history_length=5)
    await store.append([draft("A") for _ in range(8)])
    await store.append([draft("B")])
    history = await store.history("A", None, 100)
    epoch = store.epochs["A"]
    assert (history.epoch, history.first_seq, history.last_seq) == (epoch, 4, 8)
    assert [t.seq for t in history.ticks] == [4, 5, 6, 7, 8], "oldest first, the last 5 kept"
    assert all(t.epoch == epoch for t in history.ticks)
    assert [t.seq for t in (await store.history("B", None, 100)).ticks] == [1]


async def test_history_after_a_seq_and_the_last_ticks() -> None:
    store = MemoryStore()
    await store.append([draft("A") for _ in range(10)])
    assert [t.seq for t in (await store.history("A", None, 3)).ticks] == [8, 9, 10], "the last 3"
    assert [t.seq for t in (await store.history("A", 4, 3)).ticks] == [5, 6, 7], "the first 3 after 4"
    assert [t.seq for t in (await store.history("A", 8, 100)).ticks] == [9, 10]
    assert (await store.history("A", 10, 100)).ticks == []
    assert [t.seq for t in (await store.history("A", 0, 2)).ticks] == [1, 2]
    limited = await store.history("A", None, 0)
    assert (limited.ticks, limited.first_seq, limited.last_seq) == ([], 1, 10), "limit 0: the bounds only"


async def test_history_of_a_symbol_without_ticks_is_empty() -> None:
    store = MemoryStore()
    await store.register(["A"])
    assert await store.history("A", None, 10) == History()
    assert await store.history("NONE", 5, 10) == History("", 0, 0, [])


async def test_no_history_when_its_length_is_zero() -> None:
    store = MemoryStore(history_length=0)
    await store.append([draft("A"), draft("A")])
    history = await store.history("A", None, 10)
    assert (history.first_seq, history.last_seq, history.ticks) == (0, 2, [])
    assert (await store.snapshots(["A"]))["A"].seq == 2, "the seq and the snapshot are kept all the same"


async def test_tails_reads_the_last_ticks_of_each_symbol() -> None:
    store = MemoryStore()
    await store.append([draft("A") for _ in range(4)] + [draft("B")])
    tails = await store.tails({"A": 0, "B": 0, "C": 0}, 2)
    assert {s: [t.seq for t in h.ticks] for s, h in tails.items()} == {"A": [3, 4], "B": [1], "C": []}
    assert (tails["A"].first_seq, tails["A"].last_seq, tails["A"].epoch) == (1, 4, store.epochs["A"])
    assert tails["C"] == History()
    assert await store.tails({}, 2) == {}
    after = await store.tails({"A": 3, "B": 1}, 10)
    assert [t.seq for t in after["A"].ticks] == [4] and after["B"].ticks == [], "only the ticks after the seq"
    assert after["A"].last_seq == 4


async def test_forget_loses_the_seq_and_starts_a_new_epoch() -> None:
    store = MemoryStore()
    old = await store.append([draft("A"), draft("A"), draft("B")])
    store.forget("A")
    store.forget("NONE")  # nothing to forget: no error
    assert await store.known(["A"]) == [True], "still in the catalog"
    assert await store.snapshots(["A", "B"]) == {"B": old[2]}
    assert await store.history("A", None, 10) == History()
    assert (await store.catalog())["A"] is None
    (new,) = await store.append([draft("A")])
    assert new.seq == 1 and new.epoch and new.epoch != old[0].epoch
    history = await store.history("A", None, 10)
    assert [t.seq for t in history.ticks] == [1] and history.epoch == new.epoch, "the old history is gone"
    (b,) = await store.append([draft("B")])
    assert (b.seq, b.epoch) == (2, old[2].epoch), "other symbols are untouched"


async def test_ping_works() -> None:
    await MemoryStore().ping()  # raises when the store does not work


async def test_memory_store_is_a_store() -> None:
    store: Store = MemoryStore()  # mypy checks the protocol
    assert await store.snapshots([]) == {}


def test_history_is_frozen() -> None:
    with pytest.raises(AttributeError):
        History().epoch = "x"  # type: ignore[misc]
