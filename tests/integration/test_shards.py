"""Sharded Redis: REDIS_URL with several URLs, each symbol on its shard (docs/shards.md).

Every test starts its own redis-servers on free ports (never the shared 6379), so it may
stop them; hubs and feeds get REDIS_URL with all of them.
"""

from __future__ import annotations

import asyncio

import redis

from loadtest.services import Service, free_port, wait_until
from marketstream.adapters.shards import shard_of
from tests.support.client import assert_seq_increasing, stream
from tests.support.processes import READY_TIMEOUT, Processes, http_json

SYMBOLS = ["AAPL", "MSFT", "EUR/USD", "BTC/USD", "NVDA", "TSLA", "ETH/USD", "GOOG"]


def start_shards(procs: Processes, count: int) -> tuple[list[int], list[Service], str]:
    """`count` private redis-servers: their ports, processes and the REDIS_URL of all."""
    ports = [free_port() for _ in range(count)]
    servers = [procs.redis_server(p) for p in ports]
    return ports, servers, ",".join(f"redis://127.0.0.1:{p}/0" for p in ports)


def client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=2, socket_timeout=5)


def names(found: object) -> set[str]:
    """Redis's answer (a list or set of bytes) as a set of str."""
    assert isinstance(found, (list, set))
    return {x.decode() if isinstance(x, bytes) else str(x) for x in found}


def wait_snapshots(feed: Service, prefix: str, symbols: list[str], ports: list[int]) -> None:
    """Wait until every symbol has a snapshot on its shard."""
    clients = [client(p) for p in ports]

    def ready() -> bool:
        return all(clients[shard_of(s, len(ports))].hget(f"{prefix}:snapshot", s) is not None for s in symbols)

    wait_until(ready, READY_TIMEOUT, feed, f"a tick of each of {symbols} on its shard")


def test_symbols_split_over_both_shards() -> None:
    """The test symbols land on both of two shards (else the tests below prove little)."""
    assert {shard_of(s, 2) for s in SYMBOLS} == {0, 1}
    assert shard_of("aapl", 2) == shard_of("AAPL", 2)


async def test_two_hubs_one_feed_two_shards(procs: Processes, prefix: str) -> None:
    ports, _, url = start_shards(procs, 2)
    hubs = [procs.hub(prefix, url), procs.hub(prefix, url)]
    feed = procs.feed(prefix, SYMBOLS, 400, "--seed", "3", redis_url=url, wait=False)
    await asyncio.to_thread(wait_snapshots, feed, prefix, SYMBOLS, ports)

    async with stream(hubs[0].ws_url, "msgpack") as a, stream(hubs[1].ws_url, "json") as b:
        acks = [await a.subscribe(SYMBOLS), await b.subscribe(SYMBOLS[::-1])]
        for ack in acks:
            assert sorted(ack.message["symbols"]) == sorted(SYMBOLS), ack.message
            assert not ack.message["rejected"], ack.message
        for c in (a, b):
            for symbol in SYMBOLS:
                await c.wait_ticks(symbol, 20, within=20)
        await asyncio.sleep(1.0)
        for c in (a, b):
            assert_seq_increasing(c.deliveries())  # every seq, in order, none lost
        # the two hubs got the same ticks: the same seq for the same symbol means the same tick
        for symbol in SYMBOLS:
            seen_a = {d.seq: d.tick["price"] for d in a.deliveries(symbol)}
            seen_b = {d.seq: d.tick["price"] for d in b.deliveries(symbol)}
            common = seen_a.keys() & seen_b.keys()
            assert len(common) >= 10 and all(seen_a[q] == seen_b[q] for q in common), symbol

    # each symbol's keys are on its shard only, and the markers say which shard is which
    for i, port in enumerate(ports):
        r = client(port)
        assert r.get(f"{prefix}:shards") == f"{i}/2".encode()
        mine = {s for s in SYMBOLS if shard_of(s, 2) == i}
        for key in ("seq", "snapshot", "epoch", "bar"):
            assert names(r.hkeys(f"{prefix}:{key}")) == mine, (i, key)
        assert names(r.smembers(f"{prefix}:catalog")) == mine
        assert names(r.hkeys(f"{prefix}:info")) == mine
        history = {k.removeprefix(f"{prefix}:history:") for k in names(list(r.scan_iter(f"{prefix}:history:*")))}
        assert history == mine, i

    # the catalog, history and bars of the API span both shards
    status, body = http_json(hubs[1].port, "/api/v1/symbols")
    assert status == 200 and {e["symbol"] for e in body["symbols"]} == set(SYMBOLS)
    for symbol in ("AAPL", "EUR/USD"):
        status, body = http_json(hubs[0].port, f"/api/v1/history?symbol={symbol.replace('/', '%2F')}&limit=5")
        assert status == 200 and len(body["ticks"]) == 5, body
    status, body = http_json(hubs[0].port, "/healthz")
    assert status == 200 and body["status"] == "ok", body
    assert [s["state"] for s in body["shards"]] == ["up", "up"], body
    assert [s["address"] for s in body["shards"]] == url.split(","), body
    assert feed.running(), feed.log()


async def test_recovery_across_shards(procs: Processes, prefix: str) -> None:
    """`since` recovers from each symbol's own shard."""
    ports, _, url = start_shards(procs, 2)
    hub = procs.hub(prefix, url)
    feed = procs.feed(prefix, SYMBOLS, 400, "--seed", "4", redis_url=url, wait=False)
    await asyncio.to_thread(wait_snapshots, feed, prefix, SYMBOLS, ports)
    async with stream(hub.ws_url, "msgpack") as c:
        await c.subscribe(SYMBOLS)
        for symbol in SYMBOLS:
            await c.wait_ticks(symbol, 5, within=20)
        last = {s: c.deliveries(s)[-1].seq for s in SYMBOLS}
    await asyncio.sleep(1.0)
    async with stream(hub.ws_url, "msgpack") as c:
        since = {s: {"seq": last[s]} for s in SYMBOLS}
        ack = await c.subscribe(SYMBOLS, since=since)
        assert ack.message["recovered"] == {s: True for s in SYMBOLS}, ack.message
        for symbol in SYMBOLS:
            await c.wait_ticks(symbol, 10, within=20)
        for symbol in SYMBOLS:
            seqs = [d.seq for d in c.deliveries(symbol)]
            assert seqs[0] == last[symbol] + 1, (symbol, seqs[:3], last[symbol])
        assert_seq_increasing(c.deliveries())


async def test_wrong_shard_count_refused(procs: Processes, prefix: str) -> None:
    """A hub or feed whose REDIS_URL gives another shard count than the shards keep refuses to start."""
    ports, _, url = start_shards(procs, 2)
    procs.hub(prefix, url)
    one = url.split(",")[0]
    feed = procs.feed(prefix, ["AAPL"], 10, redis_url=one, wait=False)
    code = await asyncio.to_thread(feed.wait, READY_TIMEOUT)
    assert code != 0 and "manage.py reshard" in feed.log(), feed.log()
    swapped = ",".join(url.split(",")[::-1])
    hub2 = procs.hub(prefix, swapped, wait=False)
    code = await asyncio.to_thread(hub2.wait, READY_TIMEOUT)
    assert code != 0 and "manage.py reshard" in hub2.log(), hub2.log()
    assert client(ports[0]).get(f"{prefix}:shards") == b"0/2"
