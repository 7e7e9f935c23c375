"""Two Redis shards on their own hosts: a shard's link cut, and a Sentinel primary killed.

- one shard's cable pulled (`ip link set ... down`: packets vanish, no process dies): the other
  shard's symbols keep flowing at their rate, the cut ones are `unavailable` (a new subscribe is
  rejected so; /healthz says the shard is down and still answers 200, so the proxy keeps both hubs),
  and everything resumes by itself when the cable is back; with a cut longer than the hubs'
  grace, the hubs end the cut symbols' subscriptions (`unsubscribed`, reason `unavailable`);
- the primary of a Sentinel-managed shard killed: Sentinel promotes the replica, hubs and the feed
  follow within seconds, the clients' streams go on; how many ticks the replica had not received
  when its primary died is measured (the clients' seqs against the replica's stored seqs).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence

import pytest
import redis

from marketstream.client import Client
from tests.cluster.cluster import REDIS_PORT, SENTINEL_PORT, Cluster, wait_for
from tests.cluster.symbols import RATE, cluster_symbols, shard_of
from tests.cluster.test_hubs import assert_every_tick, stop_feed
from tests.cluster.watch import Watcher, close_all, start_watchers, wait_caught_up

CLIENTS = 4
FAILOVER_RATE = 400.0  # ticks/s in the failover test: a replica's lag is worth measuring only under some load


def split(symbols: Sequence[str]) -> tuple[list[str], list[str]]:
    """(shard 0's symbols, shard 1's symbols)."""
    return [s for s in symbols if shard_of(s, 2) == 0], [s for s in symbols if shard_of(s, 2) == 1]


def shard_state(cluster: Cluster, hub: str, shard: int) -> tuple[int, str]:
    """(HTTP status of the hub's /healthz, the state it gives shard `shard`)."""
    status, body = cluster.healthz(hub)
    shards = body.get("shards", []) if isinstance(body, dict) else []
    state = next((str(s.get("state")) for s in shards if s.get("shard") == shard), "?")
    return status, state


def ticks_between(watchers: Sequence[Watcher], symbols: Sequence[str], start: float, end: float) -> int:
    return sum(1 for w in watchers for s in symbols for t in w.ticks.get(s, []) if start <= t.at < end)


async def probe_subscribe(url: str, symbols: Sequence[str]) -> dict[str, str]:
    """A new client's subscribe of `symbols`: its ack's `rejected`."""
    async with Client(url, reconnect=False) as client:
        ack = await client.subscribe(symbols)
        return dict(ack.rejected)


@pytest.mark.parametrize("grace", [30, 3])
async def test_a_cut_shard_hurts_only_its_symbols(
    make_cluster: Callable[..., Cluster], report: Callable[[str], None], grace: int
) -> None:
    symbols = cluster_symbols(2)
    kept, cut = split(symbols)
    env = {"MARKETSTREAM_SHARD_GRACE_S": str(grace)}
    cluster = make_cluster(symbols, RATE, shards=2, hub_env=env)
    watchers = await start_watchers(cluster.proxy_ws, symbols, CLIENTS)
    try:
        await asyncio.sleep(1.5)
        cut_at = time.monotonic()
        await asyncio.to_thread(cluster.cut, "redis1")

        def both_see_it_down() -> bool:
            return all(shard_state(cluster, hub, 1) == (200, "down") for hub in ("hub1", "hub2"))

        noticed = await asyncio.to_thread(wait_for, both_see_it_down, 20.0, "both hubs' /healthz: shard 1 down, 200")
        rejected = await probe_subscribe(cluster.proxy_ws, symbols)
        assert rejected == dict.fromkeys(cut, "unavailable"), rejected
        servers = await asyncio.to_thread(cluster.proxy_servers)
        assert all(servers[h]["status"] == "UP" for h in ("hub1", "hub2")), "the proxy keeps both hubs"

        window = 3.0 if grace > 5 else float(grace) + 3.0  # past the grace: room for the hubs to end them
        await asyncio.sleep(window)
        now = time.monotonic()
        flowing = ticks_between(watchers, kept, now - window, now) / window / CLIENTS
        stuck = ticks_between(watchers, cut, cut_at + noticed, now)
        assert flowing >= 0.6 * RATE / 2, f"shard 0's symbols must keep flowing: {flowing:.0f} ticks/s per client"
        if grace < window:
            ended = [w.name for w in watchers if not any(set(cut) <= set(u[1]) for u in w.unsubscribed)]
            assert not ended, f"clients without `unsubscribed` for the cut symbols after the grace: {ended}"
            assert all(u[2] == "unavailable" for w in watchers for u in w.unsubscribed)

        restored_at = time.monotonic()
        await asyncio.to_thread(cluster.restore, "redis1")

        def both_see_it_up() -> bool:
            return all(shard_state(cluster, hub, 1) == (200, "up") for hub in ("hub1", "hub2"))

        healed = await asyncio.to_thread(wait_for, both_see_it_up, 30.0, "both hubs' /healthz: shard 1 up")
        if grace < window:  # the subscriptions ended: subscribe again
            for w in watchers:
                assert w.client is not None
                assert not (await w.client.subscribe(cut)).rejected
        resumed = await wait_resumed(watchers, cut, restored_at, 30.0)
        await asyncio.sleep(1.0)
        final = await stop_feed(cluster, symbols)
        await wait_caught_up(watchers, final)
        if grace > window:
            assert_every_tick(watchers, final)
        else:
            assert_every_tick(watchers, {s: final[s] for s in kept})
        assert all(len(w.hubs) == 1 for w in watchers), "no client had to reconnect"
        report(
            f"shard 1 cut ({cut} of {symbols}), grace {grace} s: both hubs said shard 1 down after {noticed:.2f} s "
            f"(still 200); subscribe -> {rejected}; shard 0's symbols went on at {flowing:.0f} ticks/s per client "
            f"(fed {RATE / 2:.0f}), the cut ones {stuck} ticks; cable back: shard up after {healed:.2f} s, "
            f"ticks of the cut symbols again after {resumed:.2f} s"
            + ("; no tick skipped or repeated" if grace > window else "; subscriptions ended with `unavailable`")
        )
        for role in ("feed", "hub1", "hub2"):
            assert_one_outage(cluster.log_of(role), role)
        report(f"feed's log lines about the shard: {fault_lines(cluster.log_of('feed'))}")
        report(f"hub1's log lines about the shard: {fault_lines(cluster.log_of('hub1'))}")
    finally:
        await close_all(watchers)


async def wait_resumed(watchers: Sequence[Watcher], symbols: Sequence[str], since: float, within: float) -> float:
    """Wait until every watcher received a tick of each of `symbols` after `since`; seconds from `since`."""
    start = time.monotonic()
    while True:
        if all(any(t.at > since for t in w.ticks.get(s, [])[-3:]) for w in watchers for s in symbols):
            return time.monotonic() - since
        if time.monotonic() - start > within:
            raise AssertionError(f"ticks of {symbols} did not come again within {within} s")
        await asyncio.sleep(0.05)


def assert_one_outage(log: str, role: str) -> None:
    """The log tells an operator of shard 1's outage in one line when it goes and one when it is back,
    without a traceback."""
    down = [line for line in log.splitlines() if "shard 1 (" in line and "is down since" in line]
    back = [line for line in log.splitlines() if "shard 1 (" in line and "is back after" in line]
    assert len(down) == 1 and len(back) == 1, f"{role}: expected one 'down' and one 'back' line:\n" + "\n".join(
        down + back
    )
    assert "Traceback" not in log, f"{role} logged a traceback:\n{log[log.index('Traceback') :][:2000]}"


def fault_lines(log: str, limit: int = 6) -> list[str]:
    """The log's lines that speak of the shard or Redis (what an operator reads), at most `limit`."""
    words = ("shard", "redis", "unavailable", "back")
    lines = [line.strip()[:200] for line in log.splitlines() if any(w in line.lower() for w in words)]
    return lines[:limit]


async def test_a_sentinel_failover_keeps_the_stream(
    make_cluster: Callable[..., Cluster], report: Callable[[str], None]
) -> None:
    symbols = cluster_symbols(2)
    kept, moved = split(symbols)
    cluster = make_cluster(symbols, FAILOVER_RATE, shards=2, sentinel=True)
    shard = cluster.shards[1]
    assert shard.replica is not None
    watchers = await start_watchers(cluster.proxy_ws, symbols, CLIENTS)
    replica = redis.Redis(host=shard.replica.addr, port=REDIS_PORT, socket_timeout=2.0)
    sentinel = redis.Redis(host=shard.sentinels[1].addr, port=SENTINEL_PORT, socket_timeout=2.0)
    try:
        await asyncio.sleep(2.0)
        killed_at = time.monotonic()
        await asyncio.to_thread(cluster.kill, "redis1")
        # what the replica holds: nothing reaches it any more, and nobody writes to it before the promotion
        held = await asyncio.to_thread(replica.hmget, f"{cluster.prefix}:seq", moved)
        replica_seq = {s: int(v or 0) for s, v in zip(moved, held, strict=True)}
        await asyncio.sleep(0.3)  # the frames already on their way from the hubs
        client_seq = {s: max(w.last_seq(s) for w in watchers) for s in moved}
        unreceived = sum(max(0, client_seq[s] - replica_seq[s]) for s in moved)

        def promoted() -> bool:
            addr = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", shard.service)
            return bool(addr) and addr[0].decode() == shard.replica.addr  # type: ignore[union-attr]

        await asyncio.to_thread(wait_for, promoted, 20.0, "Sentinel to promote the replica")
        promoted_after = time.monotonic() - killed_at
        resumed = await wait_resumed(watchers, moved, killed_at, 30.0)
        await asyncio.sleep(1.5)
        final = await stop_feed(cluster, symbols)
        await wait_caught_up(watchers, final)
        total = assert_every_tick(watchers, {s: final[s] for s in kept})
        skipped = sum(len(w.gaps(s)) for w in watchers for s in moved)
        if unreceived == 0:
            total += assert_every_tick(watchers, {s: final[s] for s in moved})
        reconnects = sum(len(w.hubs) - 1 for w in watchers)
        report(
            f"shard 1's primary killed: Sentinel promoted the replica after {promoted_after:.2f} s "
            f"(down-after 1000 ms); ticks of its symbols reached the clients again {resumed:.2f} s after the kill; "
            f"{reconnects} client reconnects"
        )
        report(
            f"ticks the replica had not received when its primary died: {unreceived} "
            f"(clients' last seqs {client_seq}, the replica's {replica_seq}); seq jumps seen by clients: {skipped}"
        )
        dropped = re.findall(r"(\d+) ticks of its symbols were not published", cluster.log_of("feed"))
        report(
            f"the feed dropped {'+'.join(dropped) or 'no'} ticks of shard 1's symbols while it had no primary "
            "(never numbered: no client sees a gap for them)"
        )
        for role in ("feed", "hub1", "hub2"):
            assert_one_outage(cluster.log_of(role), role)
        report(f"feed's log lines about the shard: {fault_lines(cluster.log_of('feed'))}")
        report(f"hub1's log lines about the shard: {fault_lines(cluster.log_of('hub1'))}")
    finally:
        replica.close()
        sentinel.close()
        await close_all(watchers)
