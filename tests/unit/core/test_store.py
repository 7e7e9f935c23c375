"""MemoryStore: the catalog and each symbol's last tick (snapshot), in one process."""

from __future__ import annotations

from marketstream.core.store import MemoryStore, Store
from tests.unit.core.fakes import tick


async def test_register_and_known() -> None:
    store = MemoryStore()
    await store.register(["AAPL", "MSFT"])
    await store.register(iter(["EUR/USD"]))
    assert await store.known(["MSFT", "IBM", "EUR/USD", "AAPL"]) == [True, False, True, True]
    assert await store.known([]) == []


async def test_save_keeps_the_last_tick_and_catalogs_its_symbol() -> None:
    store = MemoryStore()
    await store.save([tick("AAPL", 1), tick("AAPL", 2), tick("MSFT", 5)])
    snapshots = await store.snapshots(["AAPL", "MSFT", "IBM"])
    assert {s: t.seq for s, t in snapshots.items()} == {"AAPL": 2, "MSFT": 5}, "none for a symbol without ticks"
    assert await store.known(["AAPL", "MSFT"]) == [True, True]


async def test_catalog_lists_every_symbol_sorted_with_its_last_tick() -> None:
    store = MemoryStore()
    await store.register(["MSFT", "AAPL"])
    last = tick("MSFT", 3)
    await store.save([last])
    assert await store.catalog() == {"AAPL": None, "MSFT": last}
    assert list(await store.catalog()) == ["AAPL", "MSFT"]


async def test_ping_works() -> None:
    await MemoryStore().ping()  # raises when the store does not work


async def test_memory_store_is_a_store() -> None:
    store: Store = MemoryStore()  # mypy checks the protocol
    assert await store.snapshots([]) == {}
