"""Per-shard health: which shards answer, since when, and what to do about one that does not.

A `ShardMonitor` pings every shard each second (with a timeout, so a link that silently
drops packets counts as down within it) and, in a hub, also watches the channel layer's
subscription connection to each shard. It keeps a `ShardHealth` per shard (read by
/healthz and the metrics: `up`, `since`, `errors`) and logs one line when a shard goes
away (what, since when, retrying) and one when it is back (after how long, what was
missed). Publishing and reading code marks a shard down at once when a call to it fails
(`fail`). In a hub, a shard down for longer than the grace period makes the hub end the
subscriptions of its symbols (`give_up`), with `unsubscribed` reason `unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from marketstream.adapters.shards import ShardAddress, ShardCountMismatch, check_marker, shard_of

log = logging.getLogger(__name__)

INTERVAL = 1.0  # seconds between health checks
TIMEOUT = 2.0  # seconds a shard has to answer a ping or a publish
GRACE = 10.0  # seconds a hub keeps subscriptions of a down shard before ending them
GIVE_UP_ROUNDS = 3


@dataclass
class ShardHealth:
    """One shard as this process sees it: `up`, since when (`since`, unix seconds), the
    last error, and counters (`errors`: failures seen; `dropped`: ticks not published
    during this outage; `dropped_total`: since the process started)."""

    index: int
    address: str
    up: bool = True
    since: float = field(default_factory=time.time)
    error: str = ""
    errors: int = 0
    dropped: int = 0
    dropped_total: int = 0
    down_at: float = 0.0  # monotonic time it went down
    checked: bool = False  # its shard-count marker was checked since it was last up
    link_lost: bool = False  # the layer saw its subscription connection go during this outage
    given_up: int = 0  # rounds that ended its symbols' subscriptions during this outage

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "shard": self.index,
            "address": self.address,
            "state": "up" if self.up else "down",
            "since": round(self.since, 3),
        }
        if not self.up:
            found["error"] = self.error
        return found


class ShardMonitor:
    """Health of the shards `addresses` through their store clients `clients`."""

    def __init__(
        self,
        addresses: Sequence[ShardAddress],
        clients: Sequence[Any],
        prefix: str,
        role: str = "hub",
        interval: float = INTERVAL,
        timeout: float = TIMEOUT,
        grace: float = GRACE,
    ) -> None:
        self.addresses = list(addresses)
        self.clients = list(clients)
        self.prefix = prefix
        self.role = role
        self.interval = interval
        self.timeout = timeout
        self.grace = grace
        self.n = len(self.addresses)
        self.health = [ShardHealth(a.index, a.shown) for a in self.addresses]
        self.layer_shards: Callable[[], Sequence[Any]] | None = None  # the hub's layer connections
        self.give_up: Callable[[Callable[[str], bool]], object] | None = None
        self._task: asyncio.Task[None] | None = None

    # -- queries (cheap: per subscribe, never per tick) -----------------------------

    def up(self, index: int) -> bool:
        return self.health[index].up

    def available(self, symbol: str) -> bool:
        """Whether the shard of `symbol` serves."""
        return self.health[shard_of(symbol, self.n)].up

    def serving(self) -> int:
        return sum(1 for h in self.health if h.up)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Check every shard once (its shard-count marker included), then keep checking.
        Raises ShardCountMismatch; a shard that does not answer is down, not an error."""
        results = await asyncio.gather(*(self._probe(i) for i in range(self.n)), return_exceptions=True)
        for i, result in enumerate(results):
            if isinstance(result, ShardCountMismatch):
                raise result
            if isinstance(result, BaseException):
                self._down(i, failure_text(result))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="shard-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:
                log.exception("shards: health check failed unexpectedly")

    async def check(self) -> None:
        """One round: probe every shard, note the changes, give up on overdue ones."""
        results = await asyncio.gather(*(self._probe(i) for i in range(self.n)), return_exceptions=True)
        for i, result in enumerate(results):
            if isinstance(result, BaseException):
                self._down(i, failure_text(result))
            else:
                await self._up(i)
        if self.give_up is not None:
            now = time.monotonic()
            overdue = set()
            for h in self.health:
                # three rounds past the grace period: the first ends every subscription of the
                # shard's symbols; the next two catch connections that were mid-subscribe
                if not h.up and now - h.down_at >= self.grace and h.given_up < GIVE_UP_ROUNDS:
                    h.given_up += 1
                    overdue.add(h.index)
            if overdue:
                n = self.n
                self.give_up(lambda symbol: shard_of(symbol, n) in overdue)

    async def _probe(self, i: int) -> None:
        """Raise unless shard i answers (and, in a hub, its subscription link is up)."""
        await asyncio.wait_for(self.clients[i].ping(), self.timeout)
        health = self.health[i]
        if not health.checked:
            address = self.addresses[i]
            await asyncio.wait_for(check_marker(self.clients[i], self.prefix, i, self.n, address.shown), self.timeout)
            health.checked = True
        if self.layer_shards is not None:
            link = self.layer_shards()[i]
            if not link.link_up:
                raise ConnectionError(f"subscription connection lost: {link.link_error}")

    # -- changes ----------------------------------------------------------------------

    def fail(self, index: int, exc: BaseException) -> None:
        """A call to shard `index` failed: it is down from now (until a check says otherwise)."""
        self._down(index, failure_text(exc))

    def dropped(self, index: int, ticks: int) -> None:
        health = self.health[index]
        health.dropped += ticks
        health.dropped_total += ticks

    def link(self, index: int, up: bool, error: str) -> None:
        """The layer's subscription connection to shard `index` changed."""
        if not up:
            self._down(index, f"subscription connection lost: {error}")
            self.health[index].link_lost = True

    def _down(self, i: int, error: str) -> None:
        health = self.health[i]
        health.errors += 1
        health.error = error
        if not health.up:
            return
        health.up, health.since, health.down_at = False, time.time(), time.monotonic()
        health.checked = False
        health.dropped = 0
        health.link_lost = False
        health.given_up = 0
        what = (
            "ticks of its symbols are dropped"
            if self.role == "feed"
            else f"its symbols are unavailable, subscriptions end after {self.grace:g} s"
        )
        log.warning(
            "shard %d (%s) is down since %s UTC (%s): %s; checking again every %g s",
            i,
            health.address,
            time.strftime("%H:%M:%S", time.gmtime(health.since)),
            error,
            what,
            self.interval,
        )

    async def _up(self, i: int) -> None:
        health = self.health[i]
        if health.up:
            return
        lasted = time.monotonic() - health.down_at
        if self.layer_shards is not None and not health.link_lost:
            link = self.layer_shards()[i]
            if link.subscribed:
                # the link never noticed (a silent network cut): it may have lost messages,
                # or be half-open. Have it connect again; the shard is up once it has.
                health.link_lost = True
                with contextlib.suppress(Exception):
                    await link.reconnect()
                return
        health.up, health.since, health.error = True, time.time(), ""
        if self.role == "feed":
            missed = f"{health.dropped} ticks of its symbols were not published meanwhile"
        else:
            ended = " (subscriptions of its symbols were ended)" if lasted >= self.grace else ""
            missed = f"its symbols serve again{ended}; gaps are filled from its history"
        log.info("shard %d (%s) is back after %.1f s: %s", i, health.address, lasted, missed)


def failure_text(exc: BaseException) -> str:
    """What failed, for a log line or an error message: a timeout (whose text is empty)
    says so, anything else its type and text."""
    if isinstance(exc, TimeoutError):
        return "no answer within the timeout"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
