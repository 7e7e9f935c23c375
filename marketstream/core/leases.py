"""Per-key connection leases: how many WebSocket connections one API key holds, counted
across every hub that shares the lease store.

A lease is one connection's place in its key's count: a `member` (a connection id unique
across hubs, e.g. ``"hubid:connid"``) with an expiry `ttl` seconds ahead. A key holds at
most `limit` unexpired leases: `acquire` takes one only below the limit (taking it again
for a member that holds one only extends it, it never counts twice), `release` gives it
back when the connection closes.

Who renews: each hub renews the leases of all its open connections every ``ttl / 3``
seconds, in one call (`renew`), so two renewals may fail in a row before a lease expires.
A hub that crashes, or is cut off from the store, stops renewing: its leases expire after
at most `ttl` and its connections leave the count without anyone cleaning up.

A hub that was cut off only briefly takes its connections' leases back on its next renewal
even when they expired meanwhile, because those connections are still open. Other hubs may
have filled the freed places in between, so the count may exceed the limit for a while;
it falls back as connections close. The limit bounds new connections, not reconnecting hubs.

`MemoryLeases` is the embedded default (one process); the Redis adapter
(`marketstream.adapters.redis_leases`) shares leases between hubs, on Redis's clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import Protocol


class Leases(Protocol):
    @property
    def ttl(self) -> float:
        """Seconds a lease lives without renewal."""

    async def acquire(self, key: str, member: str, limit: int) -> bool:
        """Take (or extend) `member`'s lease of `key` if `key` holds fewer than `limit`
        unexpired leases, or `member` already holds one: True when it holds a lease after
        this returns, False at the limit. Raises when the store fails (the caller decides
        whether to admit the connection)."""

    async def renew(self, held: Mapping[str, Collection[str]]) -> None:
        """Extend every lease of `held` (key -> members) to `ttl` from now, in one round
        trip; leases that expired meanwhile are taken again, regardless of the limit."""

    async def release(self, key: str, member: str) -> None:
        """Give `member`'s lease of `key` back (nothing when it holds none)."""

    async def count(self, key: str) -> int:
        """How many unexpired leases `key` holds."""

    async def close(self) -> None:
        """Free what this object owns; leases held stay until released or expired."""


class MemoryLeases:
    """Leases in this process's memory: the embedded default and the one of unit tests.

    `clock` returns seconds (monotonic by default); a test passes its own to expire leases.
    """

    def __init__(self, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not ttl > 0:
            raise ValueError(f"lease ttl must be a positive number of seconds, got {ttl!r}")
        self.ttl = ttl
        self.clock = clock
        self._expiries: dict[str, dict[str, float]] = {}  # key -> member -> expiry

    def _live(self, key: str, now: float) -> dict[str, float]:
        """`key`'s leases with the expired ones dropped (an expiry at `now` is expired)."""
        leases = self._expiries.get(key, {})
        for member in [m for m, expiry in leases.items() if expiry <= now]:
            del leases[member]
        if not leases:
            self._expiries.pop(key, None)
        return leases

    async def acquire(self, key: str, member: str, limit: int) -> bool:
        now = self.clock()
        leases = self._live(key, now)
        if member not in leases and len(leases) >= limit:
            return False
        self._expiries.setdefault(key, leases)[member] = now + self.ttl
        return True

    async def renew(self, held: Mapping[str, Collection[str]]) -> None:
        now = self.clock()
        for key, members in held.items():
            if members:
                leases = self._live(key, now)
                self._expiries.setdefault(key, leases).update(dict.fromkeys(members, now + self.ttl))

    async def release(self, key: str, member: str) -> None:
        leases = self._expiries.get(key)
        if leases is not None:
            leases.pop(member, None)
            if not leases:
                del self._expiries[key]

    async def count(self, key: str) -> int:
        return len(self._live(key, self.clock()))

    async def close(self) -> None:
        """Nothing to free: leases live as long as this object."""
