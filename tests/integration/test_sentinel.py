"""A shard managed by Redis Sentinel: its primary dies, the replica is promoted, and hubs
and feeds follow by themselves (REDIS_URL's ``redis+sentinel://`` form, docs/shards.md).

Everything runs on free ports of 127.0.0.1 with short Sentinel timeouts: shard 0 a plain
redis-server, shard 1 a primary, its replica and one sentinel (quorum 1).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import redis

from loadtest.services import LOOPBACK, Service, free_port, redis_ping, spawn, wait_until
from marketstream.adapters.shards import shard_of
from tests.integration.test_shards import SYMBOLS, wait_snapshots
from tests.support.client import assert_seq_increasing, stream
from tests.support.processes import Processes, http_json

SERVICE = "shard1"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: apt-get install -y redis-server", pytrace=False)
    return binary


def start_replica(procs: Processes, port: int, primary: int) -> Service:
    """A non-persistent replica of 127.0.0.1:`primary`; waits until its link is up."""
    argv = [redis_binary(), "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"]
    argv += ["--replicaof", LOOPBACK, str(primary), "--dir", str(procs.log_dir)]  # its RDB copy there
    service = procs.add(spawn("replica", argv, {}, procs.log_dir))
    r = redis.Redis(host=LOOPBACK, port=port, socket_timeout=2)
    wait_until(
        lambda: redis_ping(port) and r.info("replication").get("master_link_status") == "up",
        20,
        service,
        f"the replica on {port} to sync with {primary}",
    )
    return service


def start_sentinel(procs: Processes, port: int, primary: int) -> Service:
    """One sentinel watching 127.0.0.1:`primary` as SERVICE, quorum 1, short timeouts."""
    conf = Path(procs.log_dir) / f"sentinel-{port}.conf"
    conf.write_text(
        f"port {port}\nbind {LOOPBACK}\ndaemonize no\n"
        f"sentinel monitor {SERVICE} {LOOPBACK} {primary} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {SERVICE} 1\n"
    )
    service = procs.add(spawn("sentinel", [redis_binary(), str(conf), "--sentinel"], {}, procs.log_dir))
    s = redis.Redis(host=LOOPBACK, port=port, socket_timeout=2)

    def knows_both() -> bool:
        try:
            replicas = s.execute_command("SENTINEL", "REPLICAS", SERVICE)
            return primary_port(s) == primary and len(replicas) == 1
        except redis.RedisError:
            return False

    wait_until(knows_both, 20, service, f"the sentinel on {port} to know the primary and its replica")
    return service


def primary_port(sentinel: redis.Redis) -> int:
    _, port = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
    return int(port)


def all_up(port: int) -> bool:
    status, body = http_json(port, "/healthz")
    return status == 200 and body["status"] == "ok"


def seqs(port: int, prefix: str, symbols: list[str]) -> dict[str, int]:
    values = redis.Redis(host=LOOPBACK, port=port, socket_timeout=2).hmget(f"{prefix}:seq", symbols)
    return {s: int(v) for s, v in zip(symbols, values, strict=True) if v is not None}


async def test_primary_killed_replica_promoted_everyone_follows(procs: Processes, prefix: str) -> None:
    plain, primary, replica, sentinel_port = free_port(), free_port(), free_port(), free_port()
    procs.redis_server(plain)
    primary_proc = procs.redis_server(primary)
    start_replica(procs, replica, primary)
    start_sentinel(procs, sentinel_port, primary)
    sentinel = redis.Redis(host=LOOPBACK, port=sentinel_port, socket_timeout=2)
    url = f"redis://{LOOPBACK}:{plain}/0,redis+sentinel://{LOOPBACK}:{sentinel_port}/{SERVICE}"
    on_sentinel = [s for s in SYMBOLS if shard_of(s, 2) == 1]
    on_plain = [s for s in SYMBOLS if shard_of(s, 2) == 0]

    hub = procs.hub(prefix, url)
    feed = procs.feed(prefix, SYMBOLS, 400, "--seed", "5", redis_url=url, wait=False)
    # wait_snapshots reads shard 1 at the primary's port: the Sentinel URL points there now
    await asyncio.to_thread(wait_snapshots, feed, prefix, SYMBOLS, [plain, primary])

    async with stream(hub.ws_url, "msgpack") as client:
        ack = await client.subscribe(SYMBOLS)
        assert not ack.message["rejected"], ack.message
        for symbol in SYMBOLS:
            await client.wait_ticks(symbol, 10, within=20)

        primary_proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await asyncio.to_thread(primary_proc.wait, 10)
        # what the replica holds now is all the new primary will have: it is read-only until promoted
        held = seqs(replica, prefix, on_sentinel)
        await asyncio.sleep(0.3)
        seen = {s: client.deliveries(s)[-1].seq for s in on_sentinel}
        lacked = {s: max(0, seen[s] - held.get(s, 0)) for s in on_sentinel}

        await asyncio.to_thread(
            wait_until, lambda: primary_port(sentinel) == replica, 30, hub, "Sentinel to promote the replica"
        )
        promoted = time.monotonic() - killed
        mark = len(client.frames)
        for symbol in on_sentinel:  # the hub and the feed follow by themselves
            await client.wait_ticks(symbol, 5, start=mark, within=30)
        resumed = time.monotonic() - killed
        for symbol in on_plain:
            await client.wait_ticks(symbol, 5, start=mark, within=5)
        # same epoch (the replica kept it): no reset; seq goes on, duplicates dropped by the hub
        assert not client.of_type("reset"), client.of_type("reset")
        assert not client.of_type("unsubscribed")
        last = {s: client.deliveries(s)[-1].seq for s in SYMBOLS}
        epochs = dict(ack.message["epochs"])
    assert_seq_increasing(client.deliveries())

    await asyncio.to_thread(wait_until, lambda: all_up(hub.port), 20, hub, "/healthz to say every shard is up")
    healthy = time.monotonic() - killed

    await asyncio.sleep(1.0)
    async with stream(hub.ws_url, "json") as again:  # a client that left recovers with `since`
        since = {s: {"seq": last[s], "epoch": epochs[s]} for s in SYMBOLS}
        ack = await again.subscribe(SYMBOLS, since=since)
        assert ack.message["recovered"] == {s: True for s in SYMBOLS}, ack.message
        for symbol in SYMBOLS:
            got = await again.wait_ticks(symbol, 3, within=20)
            assert got[0].seq == last[symbol] + 1, (symbol, got[0].seq, last[symbol])
        assert_seq_increasing(again.deliveries())
    assert feed.running(), feed.log()
    dropped = re.findall(
        r"shard 1 .* is back after ([0-9.]+) s: (\d+) ticks of its symbols were not published", feed.log()
    )
    assert dropped, f"the feed did not log shard 1's return:\n{feed.log()}"
    print(
        f"\nsentinel failover: promoted {promoted:.1f} s after the kill, ticks of its symbols again after "
        f"{resumed:.1f} s, /healthz ok after {healthy:.1f} s; "
        f"the replica lacked {sum(lacked.values())} ticks clients had seen ({lacked}); "
        f"the feed dropped {dropped[0][1]} ticks of its symbols in the {dropped[0][0]} s it was down"
    )
