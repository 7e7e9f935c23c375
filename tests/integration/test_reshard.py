"""Changing the shard count with `manage.py reshard`: from 2 shards to 3 and back to 1, every
moved symbol keeps its seq, epoch, snapshot, history and bars; clients recover across it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

from loadtest.services import ROOT, free_port, service_env
from marketstream.adapters.shards import shard_of
from tests.integration.test_shards import SYMBOLS, client, names, wait_snapshots
from tests.support.client import assert_seq_increasing, stream
from tests.support.processes import READY_TIMEOUT, Processes

STATE = ("seq", "epoch", "snapshot", "bar")


def manage(prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = service_env(None, prefix, clean=True)
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def snapshot_state(ports: list[int], prefix: str) -> dict[str, dict[str, Any]]:
    """Each symbol's state, wherever it is: its hashes, history entries and final 1s bars."""
    found: dict[str, dict[str, Any]] = {}
    for port in ports:
        r = client(port)
        for symbol in SYMBOLS:
            seq = r.hget(f"{prefix}:seq", symbol)
            if seq is None:
                continue
            assert symbol not in found, f"{symbol} is on two shards"
            state: dict[str, Any] = {name: r.hget(f"{prefix}:{name}", symbol) for name in STATE}
            state["history"] = r.xrange(f"{prefix}:history:{symbol}")
            state["bars"] = r.lrange(f"{prefix}:bars:1s:{symbol}", 0, -1)
            state["catalog"] = r.sismember(f"{prefix}:catalog", symbol)
            state["info"] = r.hget(f"{prefix}:info", symbol)
            state["port"] = port
            found[symbol] = state
    return found


async def test_reshard_two_to_three_to_one(procs: Processes, prefix: str) -> None:
    ports = [free_port() for _ in range(3)]
    for port in ports:
        procs.redis_server(port)
    urls = [f"redis://127.0.0.1:{p}/0" for p in ports]
    two, three, one = ",".join(urls[:2]), ",".join(urls), urls[2]

    feed = procs.feed(prefix, SYMBOLS, 400, "--seed", "7", redis_url=two, wait=False)
    await asyncio.to_thread(wait_snapshots, feed, prefix, SYMBOLS, ports[:2])
    await asyncio.sleep(2.5)  # a few final 1s bars

    busy = await asyncio.to_thread(manage, prefix, "reshard", "--from", two, "--to", three)
    assert busy.returncode != 0 and "stop every feed" in busy.stderr, busy
    feed.stop()
    before = snapshot_state(ports, prefix)
    assert set(before) == set(SYMBOLS) and all(s["bars"] for s in before.values())

    done = await asyncio.to_thread(manage, prefix, "reshard", "--from", two, "--to", three)
    assert done.returncode == 0, done
    moving = {s for s in SYMBOLS if urls[shard_of(s, 3)] != urls[shard_of(s, 2)]}
    assert moving, "no symbol moves from 2 shards to 3: the test proves nothing"
    assert f"{len(moving)} symbols moved, {len(SYMBOLS) - len(moving)} stayed" in done.stdout, done.stdout
    after = snapshot_state(ports, prefix)
    for symbol in SYMBOLS:
        assert after[symbol]["port"] == ports[shard_of(symbol, 3)], symbol
        assert {k: v for k, v in after[symbol].items() if k != "port"} == {
            k: v for k, v in before[symbol].items() if k != "port"
        }, symbol
    for j, port in enumerate(ports):
        r = client(port)
        assert r.get(f"{prefix}:shards") == f"{j}/3".encode()
        assert names(r.smembers(f"{prefix}:catalog")) == {s for s in SYMBOLS if shard_of(s, 3) == j}

    # the old REDIS_URL is refused now; the new one serves, and clients recover across the move
    hub = procs.hub(prefix, two, wait=False)
    assert await asyncio.to_thread(hub.wait, READY_TIMEOUT) != 0 and "manage.py reshard" in hub.log(), hub.log()
    hub = procs.hub(prefix, three)
    last = {s: int(before[s]["seq"]) for s in SYMBOLS}
    epochs = {s: before[s]["epoch"].decode() for s in SYMBOLS}
    async with stream(hub.ws_url, "msgpack") as c:
        since = {s: {"seq": last[s] - 5, "epoch": epochs[s]} for s in SYMBOLS}
        ack = await c.subscribe(SYMBOLS, since=since)
        assert ack.message["recovered"] == {s: True for s in SYMBOLS}, ack.message
        assert ack.message["epochs"] == epochs, "a moved symbol keeps its epoch"
        feed = procs.feed(prefix, SYMBOLS, 400, "--seed", "8", redis_url=three, wait=False)
        for symbol in SYMBOLS:
            got = await c.wait_ticks(symbol, 10, within=20)
            assert [d.seq for d in got[:6]] == list(range(last[symbol] - 4, last[symbol] + 2)), symbol
        assert not c.of_type("reset")
        assert_seq_increasing(c.deliveries())
    feed.stop()
    hub.stop()

    # and down to one shard: everything on the third server
    done = await asyncio.to_thread(manage, prefix, "reshard", "--from", three, "--to", one, "--quiet-seconds", "0.2")
    assert done.returncode == 0, done
    final = snapshot_state(ports, prefix)
    assert all(s["port"] == ports[2] for s in final.values())
    assert client(ports[2]).get(f"{prefix}:shards") == b"0/1"
    assert client(ports[0]).get(f"{prefix}:shards") is None
    assert not list(client(ports[0]).scan_iter(f"{prefix}:*")), "nothing left on a retired shard"
