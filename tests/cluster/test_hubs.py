"""Hubs on two hosts behind HAProxy: every tick to every client, a hub host lost, a rolling restart.

- every client, whichever hub the proxy gave it, receives every tick of its symbols once and in
  seq order (checked from its first tick to the last one the feed published);
- a hub host lost mid-stream (its processes killed, or its cable pulled and then its processes
  killed): the proxy marks it DOWN, its clients reconnect through the proxy to the other hub
  and, with `since`, lose nothing;
- a rolling restart as docs/deploy.md describes it (drain at the proxy, SIGTERM: 1012, start,
  ready) loses nothing either.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import pytest

from tests.cluster.cluster import Cluster, wait_for
from tests.cluster.symbols import RATE, cluster_symbols, shard_count, shard_of
from tests.cluster.watch import (
    Watcher,
    close_all,
    describe,
    latencies_ms,
    start_watchers,
    wait_caught_up,
    wait_reconnected,
)

CLIENTS = 8
STREAM_S = 4.0  # seconds of live stream before the end (a) or before the fault (b)


def assert_every_tick(watchers: list[Watcher], final: dict[str, int]) -> int:
    """Every watcher holds, per symbol, an unbroken run of seqs up to `final`; the ticks counted."""
    total = 0
    for w in watchers:
        for symbol, last in final.items():
            assert w.gaps(symbol) == [], f"{w.name} {symbol}: seqs skipped or repeated {w.gaps(symbol)[:5]}"
            assert w.last_seq(symbol) == last, f"{w.name} {symbol}: last seq {w.last_seq(symbol)}, published {last}"
            total += len(w.ticks[symbol])
        assert w.duplicates() == 0, f"{w.name}: ticks received twice"
    return total


async def stop_feed(cluster: Cluster, symbols: list[str]) -> dict[str, int]:
    """Stop the feed (SIGTERM: it stops cleanly); the last seq of each symbol."""
    await asyncio.to_thread(cluster.services["feed"].stop)
    return await asyncio.to_thread(cluster.last_seqs, symbols)


async def test_every_client_gets_every_tick_in_order_on_either_hub(
    make_cluster: Callable[..., Cluster], report: Callable[[str], None]
) -> None:
    symbols = cluster_symbols()
    cluster = make_cluster(symbols, RATE, shards=shard_count())
    watchers = await start_watchers(cluster.proxy_ws, symbols, CLIENTS)
    try:
        per_hub = Counter(w.hub for w in watchers)
        assert per_hub["hub1"] >= 2 and per_hub["hub2"] >= 2, f"the proxy should spread clients: {per_hub}"
        started = time.monotonic()
        await asyncio.sleep(STREAM_S)
        final = await stop_feed(cluster, symbols)
        drained = await wait_caught_up(watchers, final)
        total = assert_every_tick(watchers, final)
        assert all(len(w.hubs) == 1 for w in watchers), "no client should have reconnected"
        on_shards = [sorted(cluster.stored_seqs(s.primary.role)) for s in cluster.shards]
        wanted = [
            sorted(s for s in symbols if shard_of(s, len(cluster.shards)) == i) for i in range(len(cluster.shards))
        ]
        assert on_shards == wanted, f"each symbol's seq is on its shard's host: {on_shards}, expected {wanted}"
        report(
            f"{len(cluster.shards)} shard(s) holding {on_shards}, {len(symbols)} symbols at {RATE:.0f} ticks/s, "
            f"{CLIENTS} clients ({dict(per_hub)}) through HAProxy: {total} ticks received in "
            f"{time.monotonic() - started:.1f} s, none skipped or repeated; the last arrived {drained:.2f} s "
            "after the feed stopped"
        )
        report(f"tick age at the client (ingest to receipt, via hub and proxy): {describe(latencies_ms(watchers))}")
    finally:
        await close_all(watchers)


@pytest.mark.parametrize("how", ["killed", "cable-pulled"])
async def test_a_lost_hub_host_loses_no_tick(
    make_cluster: Callable[..., Cluster], report: Callable[[str], None], how: str
) -> None:
    symbols = cluster_symbols()
    cluster = make_cluster(symbols, RATE, shards=shard_count())
    watchers = await start_watchers(cluster.proxy_ws, symbols, CLIENTS)
    try:
        moved = [w for w in watchers if w.hub == "hub1"]
        stayed = [w for w in watchers if w.hub == "hub2"]
        assert moved and stayed, f"the proxy should spread clients: {[w.hub for w in watchers]}"
        await asyncio.sleep(STREAM_S / 2)
        lost_at = time.monotonic()
        if how == "cable-pulled":  # nothing reaches the proxy or the clients: no FIN, no RST
            await asyncio.to_thread(cluster.cut, "hub1")
        await asyncio.to_thread(cluster.kill, "hub1")

        def down() -> bool:
            return cluster.proxy_servers()["hub1"]["status"].startswith("DOWN")

        marked_down = await asyncio.to_thread(wait_for, down, 15.0, "the proxy to mark hub1 DOWN")
        back = await wait_reconnected(moved, lost_at, 20.0)
        await asyncio.sleep(STREAM_S / 2)
        final = await stop_feed(cluster, symbols)
        await wait_caught_up(watchers, final)
        total = assert_every_tick(watchers, final)

        assert all(w.hubs == ["hub1", "hub2"] for w in moved), [(w.name, w.hubs) for w in moved]
        assert all(w.hubs == ["hub2"] for w in stayed), [(w.name, w.hubs) for w in stayed]
        refused = {w.name: w.client.recovered for w in moved if w.client and not all(w.client.recovered.values())}
        assert not refused, f"every symbol is recovered with since: {refused}"
        servers = await asyncio.to_thread(cluster.proxy_servers)
        assert servers["hub1"]["status"].startswith("DOWN") and int(servers["hub1"]["scur"]) == 0, servers["hub1"]
        assert int(servers["hub2"]["scur"]) >= len(watchers), servers["hub2"]
        assert "hubs/hub1 is DOWN" in cluster.log_of("proxy"), "the proxy's log says hub1 went DOWN"
        recovered = sum(w.recovered_ticks(1) for w in moved)
        codes = Counter(code for w in moved for _, code, _ in w.disconnects)
        report(
            f"hub1 {how}: the proxy marked it DOWN after {marked_down:.2f} s; its {len(moved)} clients (closed "
            f"with {dict(codes)}) were back on hub2 after {describe(back, 's')}; they recovered {recovered} "
            f"ticks with since; {total} ticks received by {len(watchers)} clients, none skipped or repeated"
        )
    finally:
        await close_all(watchers)


async def test_a_rolling_restart_through_the_proxy_loses_no_tick(
    make_cluster: Callable[..., Cluster], report: Callable[[str], None]
) -> None:
    """docs/deploy.md's procedure: drain a hub at the proxy, SIGTERM it (its clients get 1012 and
    come back at once through the proxy to the other hub, with `since`), start it again, ready it;
    then the other hub."""
    symbols = cluster_symbols()
    cluster = make_cluster(symbols, RATE, shards=shard_count())
    watchers = await start_watchers(cluster.proxy_ws, symbols, CLIENTS)
    try:
        await asyncio.sleep(STREAM_S / 4)
        back: list[float] = []
        for role, other in (("hub1", "hub2"), ("hub2", "hub1")):
            moved = [w for w in watchers if w.hub == role]
            assert moved, f"no client on {role}: {[w.hub for w in watchers]}"
            await asyncio.to_thread(cluster.proxy_command, f"set server hubs/{role} state drain")
            late = await start_watchers(cluster.proxy_ws, symbols, 1, prefix=f"late-{role}-")
            watchers += late
            assert late[0].hub == other, f"a draining hub takes no new client: {late[0].hubs}"
            stopped_at = time.monotonic()
            await asyncio.to_thread(cluster.services[role].stop)  # SIGTERM: uvicorn closes with 1012
            back += await wait_reconnected(moved, stopped_at, 20.0)
            assert all(w.disconnects[-1][1] == 1012 for w in moved), [(w.name, w.disconnects) for w in moved]
            assert all(w.hub == other for w in moved), [(w.name, w.hubs) for w in moved]
            await asyncio.to_thread(cluster.start_hub, role)
            await asyncio.to_thread(cluster.proxy_command, f"set server hubs/{role} state ready")
            await asyncio.to_thread(cluster.wait_proxy_up, role)
        final = await stop_feed(cluster, symbols)
        await wait_caught_up(watchers, final)
        total = assert_every_tick(watchers, final)
        restarted = sum(len(w.hubs) - 1 for w in watchers)
        recovered = sum(w.recovered_ticks(i) for w in watchers for i in range(1, len(w.hubs)))
        report(
            f"rolling restart of both hubs (drain, SIGTERM, start, ready): {restarted} reconnects after 1012, "
            f"back on the other hub after {describe(back, 's')}; {recovered} ticks recovered with since; "
            f"{total} ticks received by {len(watchers)} clients, none skipped or repeated"
        )
    finally:
        await close_all(watchers)
