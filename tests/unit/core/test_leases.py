"""MemoryLeases: the limit, release, idempotent re-acquire, expiry and renewal on a fake clock."""

from __future__ import annotations

import pytest

from marketstream.core.leases import Leases, MemoryLeases


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def leases(clock: Clock) -> MemoryLeases:
    return MemoryLeases(ttl=30.0, clock=clock)


def test_memory_leases_is_a_lease_store(leases: MemoryLeases) -> None:
    store: Leases = leases  # mypy checks the protocol here
    assert store.ttl == 30.0


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        MemoryLeases(ttl=0)


async def test_the_limit_is_respected(leases: MemoryLeases) -> None:
    assert [await leases.acquire("k", f"h:{i}", 2) for i in range(4)] == [True, True, False, False]
    assert await leases.count("k") == 2
    assert await leases.acquire("other", "h:9", 2)  # keys count apart
    assert await leases.count("other") == 1
    assert not await leases.acquire("z", "h:0", 0)


async def test_release_frees_a_place(leases: MemoryLeases) -> None:
    assert await leases.acquire("k", "h:1", 1)
    assert not await leases.acquire("k", "h:2", 1)
    await leases.release("k", "h:1")
    await leases.release("k", "h:1")  # twice: nothing
    await leases.release("nobody", "h:1")
    assert await leases.count("k") == 0
    assert await leases.acquire("k", "h:2", 1)


async def test_acquiring_again_does_not_count_twice(leases: MemoryLeases) -> None:
    assert await leases.acquire("k", "h:1", 2)
    assert await leases.acquire("k", "h:1", 2)
    assert await leases.count("k") == 1
    assert await leases.acquire("k", "h:2", 2)
    assert await leases.acquire("k", "h:1", 2)  # at the limit, but it holds one already
    assert await leases.count("k") == 2


async def test_a_lease_not_renewed_expires(leases: MemoryLeases, clock: Clock) -> None:
    assert await leases.acquire("k", "h:1", 1)
    clock.now += 29.9
    assert await leases.count("k") == 1
    assert not await leases.acquire("k", "h:2", 1)
    clock.now += 0.1  # exactly ttl: expired
    assert await leases.count("k") == 0
    assert await leases.acquire("k", "h:2", 1)


async def test_renew_keeps_leases_alive(leases: MemoryLeases, clock: Clock) -> None:
    assert await leases.acquire("a", "h:1", 5)
    assert await leases.acquire("b", "h:2", 5)
    for _ in range(10):
        clock.now += 10.0
        await leases.renew({"a": ["h:1"], "b": {"h:2"}, "c": []})
    assert (await leases.count("a"), await leases.count("b"), await leases.count("c")) == (1, 1, 0)
    clock.now += 30.0
    assert (await leases.count("a"), await leases.count("b")) == (0, 0)


async def test_renew_takes_expired_leases_back_even_over_the_limit(leases: MemoryLeases, clock: Clock) -> None:
    assert await leases.acquire("k", "h:1", 1)
    clock.now += 31.0  # the hub was cut off: its lease expired, another hub took the place
    assert await leases.acquire("k", "other:1", 1)
    await leases.renew({"k": ["h:1"]})
    assert await leases.count("k") == 2  # briefly above the limit (documented)
    assert not await leases.acquire("k", "new:1", 1)
    await leases.close()
