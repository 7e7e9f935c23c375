"""Recovery and seq accounting through real hubs, feeds and Redis (PROTOCOL.md, "Recovery",
epochs, `reset`, `conflated`, `GET /api/v1/history`).

- a reconnect with `since` gets every missed seq, then the live ones; each documented
  `recovered: false` case gets a snapshot instead;
- `conflated` accounts for every seq a throttled client skips, also on recovery;
- several publishers of one symbol share one gap-free seq;
- a seq nobody published is counted lost, not conflated;
- the hub fills what it missed while its Redis connection was cut from history;
- Redis losing its data gives each symbol a new epoch, announced with `reset`;
- the history endpoint.

Every test starts its own hub and feeds under its own prefix; where one must break or
flush Redis, on a private redis-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis import asyncio as aioredis

from loadtest.services import LOOPBACK, Hub, Service, free_port
from marketstream.core.recovery import REFUSALS
from tests.support.client import WAIT, Delivery, Frame, StreamClient, assert_seq_increasing, stream
from tests.support.processes import REDIS_URL, Processes, catalog, http_get, http_json

MAX_RECOVERY = 300  # the hub's limit in the tests of refused recoveries
SHORT_HISTORY = 50  # MARKETSTREAM_HISTORY_MAXLEN of a feed whose history must be trimmed


# -- helpers ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def redis_client(url: str = REDIS_URL) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        yield client
    finally:
        await client.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = WAIT) -> None:
    """Poll `check` every 20 ms until it is true; fail saying `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


async def stored_seq(client: aioredis.Redis, prefix: str, symbol: str) -> int:
    """The symbol's last seq as the seq authority holds it (0 when it has none)."""
    value = await client.hget(f"{prefix}:seq", symbol)
    return int(value) if value is not None else 0


async def wait_stored_seq(client: aioredis.Redis, prefix: str, symbol: str, at_least: int) -> int:
    """Wait until the symbol's stored seq is at least `at_least`; returns it."""
    seen = [0]

    async def reached() -> bool:
        seen[0] = await stored_seq(client, prefix, symbol)
        return seen[0] >= at_least

    await eventually(reached, f"seq {at_least} of {symbol} (at {seen[0]})")
    return seen[0]


def epochs_of(hub: Hub) -> dict[str, str]:
    """symbol -> epoch, from the catalog (GET /api/v1/symbols)."""
    status, body = http_json(hub.port, "/api/v1/symbols")
    assert status == 200, body
    return {e["symbol"]: e["epoch"] for e in body["symbols"]}


def metric(hub: Hub, name: str, **labels: str) -> float:
    """One value of the hub's /metrics: the sample of `name` with exactly `labels`."""
    status, _, text = http_get(hub.port, "/metrics")
    assert status == 200
    shown = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    found = re.search(rf"^{name}(?:_total)?{re.escape(shown)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert found, f"no metric {name}{shown} in /metrics"
    return float(found.group(1))


def history(hub: Hub, **params: Any) -> tuple[int, Any]:
    """GET /api/v1/history with `params` (url-encoded) -> (status, JSON body)."""
    return http_json(hub.port, f"/api/v1/history?{urllib.parse.urlencode(params)}")


async def run_to_end(feed: Service) -> None:
    """Wait for a feed started with --ticks to publish them all and exit."""
    code = await asyncio.to_thread(feed.wait, 30)
    assert code == 0, feed.log()


def published(feed: Service) -> int:
    """The ticks a stopped runfeed says it published (after its opening tick per symbol)."""
    found = re.search(r"runfeed: published (\d+) ticks", feed.log())
    assert found, f"runfeed did not report what it published:\n{feed.log_tail()}"
    return int(found.group(1))


def seqs(deliveries: list[Delivery]) -> list[int]:
    return [d.seq for d in deliveries]


def jumps(deliveries: list[Delivery]) -> list[tuple[int, int, int]]:
    """Every (seq, next seq, its conflated) where the next seq is not seq + 1."""
    return [(a.seq, b.seq, b.tick.get("conflated", 0)) for a, b in itertools.pairwise(deliveries) if b.seq != a.seq + 1]


def consecutive(values: list[int], first: int | None = None) -> bool:
    """Whether `values` are first, first + 1, ... (no gap, no duplicate)."""
    if not values:
        return False
    start = values[0] if first is None else first
    return values == list(range(start, start + len(values)))


async def frames_caused(client: StreamClient, ack: Frame) -> list[Frame]:
    """The frames that came between a subscribe's ack and the pong of a ping sent after it:
    everything that subscribe queued (each request's frames are queued before the next
    request is handled). Meant for symbols without live ticks (their feeds have ended)."""
    pong = await client.ping()
    return client.frames[ack.index + 1 : pong.index]


def private_url(port: int) -> str:
    return f"redis://{LOOPBACK}:{port}/0"


class TcpProxy:
    """A TCP forwarder on a free loopback port to 127.0.0.1:`target`, which the test can cut
    (every forwarded connection closed with a reset, new ones refused) and restore."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, LOOPBACK, self.port, reuse_address=True)

    async def cut(self) -> None:
        """Stop listening (connections are refused) and reset every forwarded connection."""
        if self.server is not None:
            self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None

    async def stop(self) -> None:
        await self.cut()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        self.writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.transport.abort()  # one side gone: the other goes too
            self.writers.discard(dst)


# -- recovery with `since` --------------------------------------------------------------


async def test_reconnect_with_since_gets_every_missed_tick_then_live(procs: Processes, prefix: str) -> None:
    symbols = ["RECA", "RECB"]
    hub = procs.hub(prefix)
    procs.feed(prefix, symbols, 200)  # about 100 ticks/s per symbol
    async with redis_client() as redis:
        async with stream(hub.ws_url, "msgpack") as first:
            ack1 = await first.subscribe(symbols)
            for symbol in symbols:
                await first.wait_ticks(symbol, 10)
        before = first.deliveries()
        held = {s: first.deliveries(s)[-1].seq for s in symbols}
        # ticks keep flowing while the client is away
        for symbol in symbols:
            await wait_stored_seq(redis, prefix, symbol, held[symbol] + 40)
        away_until = time.time_ns()
        since: dict[str, Any] = {
            "RECA": held["RECA"],
            "RECB": {"seq": held["RECB"], "epoch": ack1.message["epochs"]["RECB"]},
        }
        async with stream(hub.ws_url, "json") as second:
            ack = await second.subscribe(symbols, since=since)
            assert ack.message["recovered"] == {"RECA": True, "RECB": True}, ack.message
            assert ack.message["epochs"] == {s: epochs_of(hub)[s] for s in symbols} == ack1.message["epochs"]
            live = {s: await stored_seq(redis, prefix, s) for s in symbols}
            for symbol in symbols:
                await second.wait_seq(symbol, live[symbol] + 20)
    assert not second.of_type("snapshot"), "a recovered symbol got a snapshot"
    for symbol in symbols:
        mine = second.deliveries(symbol)
        assert mine[0].index > ack.index, "a tick before the ack"
        assert consecutive(seqs(mine), held[symbol] + 1), f"{symbol}: after {held[symbol]} got {seqs(mine)}"
        assert not any("conflated" in d.tick for d in mine)
        # the missed ones (published while the client was away) first, then live ones
        assert mine[0].tick["ts"] < away_until < mine[-1].tick["ts"]
    totals = assert_seq_increasing(before + second.deliveries(), lost=0)
    assert totals.gaps == 0 and totals.conflated == 0
    assert metric(hub, "marketstream_recoveries_served") == 2


async def test_recovered_false_cases_get_a_snapshot(procs: Processes, prefix: str) -> None:
    """Each documented refusal, against symbols whose feeds have ended (nothing moves):
    wrong epoch, since ahead, more than max_recovery missing, history no longer holding
    the seqs; beside each, the boundary that still recovers."""
    hub = procs.hub(prefix, env={"MARKETSTREAM_MAX_RECOVERY": str(MAX_RECOVERY)})
    deep = procs.feed(prefix, ["DEEP"], 1000, "--ticks", "400", wait=False)
    short_env = {"MARKETSTREAM_HISTORY_MAXLEN": str(SHORT_HISTORY)}
    shallow = procs.feed(prefix, ["SHALLOW"], 1000, "--ticks", "300", wait=False, env=short_env)
    await run_to_end(deep)
    await run_to_end(shallow)
    last = catalog(hub.port)
    epochs = epochs_of(hub)
    assert last["DEEP"]["seq"] == 401 and last["SHALLOW"]["seq"] == 301  # the opening tick and --ticks
    status, body = history(hub, symbol="SHALLOW", limit=1)
    assert status == 200, body
    kept_from = body["first_seq"]
    # trimmed, and still within reach of max_recovery: the refusal below is history's
    assert 1 < kept_from and 301 - (kept_from - 2) <= MAX_RECOVERY, kept_from

    async def resubscribe(symbol: str, since: Any, recovered: bool) -> list[Frame]:
        """Subscribe on a new connection with `since` and snapshot=false; the frames it caused."""
        async with stream(hub.ws_url, "msgpack") as client:
            welcome = client.frames[0].message
            assert welcome["limits"]["max_recovery"] == MAX_RECOVERY, welcome
            ack = await client.subscribe([symbol], since={symbol: since}, snapshot=False)
            assert ack.message["recovered"] == {symbol: recovered}, (since, ack.message)
            assert ack.message["epochs"] == {symbol: epochs[symbol]}
            return await frames_caused(client, ack)

    def refused(frames: list[Frame], symbol: str) -> None:
        assert [f.type for f in frames] == ["snapshot"], [f.message for f in frames]
        assert frames[0].message["ticks"] == [last[symbol]]

    def recovered(frames: list[Frame], symbol: str, after: int) -> None:
        assert all(f.type == "ticks" for f in frames), [f.type for f in frames]
        ticks = [t for f in frames for t in f.message["ticks"]]
        assert all(t["symbol"] == symbol for t in ticks)
        assert [t["seq"] for t in ticks] == list(range(after + 1, last[symbol]["seq"] + 1))
        assert ticks[-1] == last[symbol]

    # the epoch is not current
    refused(await resubscribe("DEEP", {"seq": 390, "epoch": "00000000"}, False), "DEEP")
    # since is ahead of the symbol's seq (either form)
    refused(await resubscribe("DEEP", 402, False), "DEEP")
    refused(await resubscribe("DEEP", {"seq": 1000, "epoch": epochs["DEEP"]}, False), "DEEP")
    # more than max_recovery missing; exactly max_recovery recovers
    refused(await resubscribe("DEEP", 401 - MAX_RECOVERY - 1, False), "DEEP")
    recovered(await resubscribe("DEEP", 401 - MAX_RECOVERY, True), "DEEP", 401 - MAX_RECOVERY)
    # nothing missing: recovered, nothing sent
    assert await resubscribe("DEEP", {"seq": 401, "epoch": epochs["DEEP"]}, True) == []
    # history no longer holds the seq after since; from the oldest it holds, it recovers
    refused(await resubscribe("SHALLOW", {"seq": kept_from - 2, "epoch": epochs["SHALLOW"]}, False), "SHALLOW")
    recovered(await resubscribe("SHALLOW", kept_from - 1, True), "SHALLOW", kept_from - 1)
    refusals = {r: metric(hub, "marketstream_recoveries_refused", reason=r) for r in REFUSALS}
    assert refusals == {"epoch": 1, "ahead": 2, "too_many": 1, "too_old": 1, "unavailable": 0}, refusals

    # one subscribe, mixed answers: only the refused symbol gets its snapshot
    async with stream(hub.ws_url, "json") as client:
        ack = await client.subscribe(
            ["DEEP", "SHALLOW"], since={"DEEP": {"seq": 400, "epoch": "0ld3p0c4"}, "SHALLOW": 299}, snapshot=False
        )
        assert ack.message["recovered"] == {"DEEP": False, "SHALLOW": True}
        frames = await frames_caused(client, ack)
        got = sorted((f.type, [t["seq"] for t in f.message["ticks"]]) for f in frames)
        assert got == [("snapshot", [401]), ("ticks", [300, 301])], [f.message for f in frames]


# -- conflated ------------------------------------------------------------------------


async def test_throttled_conflated_counts_add_up(procs: Processes, prefix: str) -> None:
    symbols = ["THRA", "THRB"]
    hub = procs.hub(prefix)
    procs.feed(prefix, symbols, 300)  # about 150 ticks/s per symbol, 15 per 100 ms interval
    async with stream(hub.ws_url, "msgpack") as client:
        ack = await client.subscribe(symbols, throttle_ms=100)
        assert ack.message["throttle_ms"] == 100
        for symbol in symbols:
            await client.wait_ticks(symbol, 25)
    totals = assert_seq_increasing(client.deliveries(), lost=0)
    assert totals.conflated == totals.gaps > 0
    for symbol in symbols:
        mine = client.deliveries(symbol)
        merged = sum(d.tick.get("conflated", 0) for d in mine[1:])
        assert mine[-1].seq - mine[0].seq == len(mine) - 1 + merged, f"{symbol}: counts do not add up"
        assert merged > 5 * len(mine), f"{symbol}: {merged} conflated over {len(mine)} deliveries"


async def test_throttled_recovery_delivers_one_tick_conflating_the_missed(procs: Processes, prefix: str) -> None:
    symbol = "THRREC"
    hub = procs.hub(prefix)
    procs.feed(prefix, [symbol], 100)
    async with redis_client() as redis:
        async with stream(hub.ws_url, "msgpack") as first:
            await first.subscribe([symbol])
            await first.wait_ticks(symbol, 5)
        held = first.deliveries(symbol)[-1].seq
        await wait_stored_seq(redis, prefix, symbol, held + 40)
        async with stream(hub.ws_url, "msgpack") as second:
            ack = await second.subscribe([symbol], throttle_ms=300, since={symbol: held})
            assert ack.message["recovered"] == {symbol: True} and ack.message["throttle_ms"] == 300
            await second.wait_ticks(symbol, 4)
    assert not second.of_type("snapshot")
    recovery = second.frames[ack.index + 1]
    assert recovery.type == "ticks" and len(recovery.message["ticks"]) == 1, recovery.message
    tick = recovery.message["ticks"][0]
    assert tick["seq"] >= held + 40 and tick["conflated"] == tick["seq"] - held - 1, (held, tick)
    mine = second.deliveries(symbol)
    assert mine[0].tick == tick
    totals = assert_seq_increasing(first.deliveries() + mine, lost=0)
    assert totals.conflated == totals.gaps
    assert mine[-1].seq - held == len(mine) + sum(d.tick.get("conflated", 0) for d in mine)


# -- one seq, several publishers --------------------------------------------------------


async def test_two_publishers_of_one_symbol_share_one_seq(procs: Processes, prefix: str) -> None:
    symbol = "DUO"
    hub = procs.hub(prefix)
    feeds = [procs.feed(prefix, [symbol], 100, "--seed", "1")]
    async with (
        redis_client() as redis,
        stream(hub.ws_url, "msgpack") as packed,
        stream(hub.ws_url, "json") as text,
    ):
        for client in (packed, text):
            await client.subscribe([symbol])
        feeds.append(procs.feed(prefix, [symbol], 100, "--seed", "2"))
        start = await stored_seq(redis, prefix, symbol)
        await wait_stored_seq(redis, prefix, symbol, start + 200)  # both publishing, about 1 s
        for feed in feeds:
            assert feed.running(), feed.log()
            feed.stop()
        final = await stored_seq(redis, prefix, symbol)
        for client in (packed, text):
            await client.wait_seq(symbol, final)
    # every tick either feed published has its own seq: one opening tick each, then the rest
    assert final == sum(published(f) for f in feeds) + 2
    by_seq: dict[int, dict[str, Any]] = {}
    for client in (packed, text):
        mine = client.deliveries(symbol)
        assert_seq_increasing(mine, lost=0)
        assert consecutive(seqs(mine)) and mine[-1].seq == final, f"{client.encoding}: {seqs(mine)}"
        for d in mine:  # the same seq is the same tick for every client
            assert by_seq.setdefault(d.seq, d.tick) == d.tick
    status, body = history(hub, symbol=symbol, after_seq=0, limit=10000)
    assert status == 200 and [t["seq"] for t in body["ticks"]] == list(range(1, final + 1))
    for t in body["ticks"]:
        assert by_seq.get(t["seq"], t) == t


# -- lost, not conflated ----------------------------------------------------------------


async def test_seqs_never_published_are_counted_lost_not_conflated(procs: Processes, prefix: str) -> None:
    symbol = "GAPS"
    skip = 5
    hub = procs.hub(prefix)
    procs.feed(prefix, [symbol], 100)
    async with (
        redis_client() as redis,
        stream(hub.ws_url, "msgpack") as plain,
        stream(hub.ws_url, "json") as throttled,
    ):
        await plain.subscribe([symbol])
        await throttled.subscribe([symbol], throttle_ms=200)
        await plain.wait_ticks(symbol, 10)
        await throttled.wait_ticks(symbol, 2)
        # seqs assigned past the hub: published nowhere, kept in no history
        top = int(await redis.hincrby(f"{prefix}:seq", symbol, skip))
        hole = list(range(top - skip + 1, top + 1))
        for client in (plain, throttled):
            await client.wait_seq(symbol, top + 30)
        # a client that holds a seq before the hole cannot recover across it
        async with stream(hub.ws_url, "msgpack") as late:
            ack = await late.subscribe([symbol], since={symbol: hole[0] - 2}, snapshot=False)
            assert ack.message["recovered"] == {symbol: False}
            await late.wait_for(lambda f: f.type == "snapshot", start=ack.index)
    assert not set(hole) & {d.seq for c in (plain, throttled) for d in c.deliveries(symbol)}
    mine = plain.deliveries(symbol)
    assert jumps(mine) == [(hole[0] - 1, top + 1, 0)], jumps(mine)
    totals = assert_seq_increasing(mine, lost=skip)
    assert totals.conflated == 0
    totals = assert_seq_increasing(throttled.deliveries(symbol), lost=skip)
    assert totals.conflated == totals.gaps - skip > 0
    assert metric(hub, "marketstream_ticks_lost") == skip


# -- a hub's Redis connection cut -------------------------------------------------------


async def test_hub_fills_what_it_missed_while_its_redis_connection_was_cut(procs: Processes, prefix: str) -> None:
    symbols = ["CUTA", "CUTB"]
    port = free_port()
    procs.redis_server(port)
    proxy = TcpProxy(port)
    await proxy.start()
    try:
        # in a thread: this event loop runs the proxy, which the hub needs to start
        hub = await asyncio.to_thread(procs.hub, prefix, f"redis://{LOOPBACK}:{proxy.port}/0")
        procs.feed(prefix, symbols, 200, redis_url=private_url(port))  # straight to Redis
        async with redis_client(private_url(port)) as redis, stream(hub.ws_url, "msgpack") as client:
            await client.subscribe(symbols)
            for symbol in symbols:
                await client.wait_ticks(symbol, 10)
            connections = proxy.accepted
            await proxy.cut()
            at_cut = {s: await stored_seq(redis, prefix, s) for s in symbols}
            for symbol in symbols:  # the feed goes on publishing, unheard by the hub
                await wait_stored_seq(redis, prefix, symbol, at_cut[symbol] + 50)
            await asyncio.sleep(0.5)  # refused for a while (about a second in all)
            await proxy.start()
            restored = {s: await stored_seq(redis, prefix, s) for s in symbols}
            for symbol in symbols:
                await client.wait_seq(symbol, restored[symbol] + 50, within=30)
            assert proxy.accepted > connections, "the hub did not reconnect through the proxy"
            assert hub.running()
    finally:
        await proxy.stop()
    for symbol in symbols:
        skipped = jumps(client.deliveries(symbol))
        assert not skipped, f"{symbol}: seqs skipped (seq, next seq, conflated): {skipped}"
    totals = assert_seq_increasing(client.deliveries(), lost=0)
    assert totals.gaps == 0
    assert metric(hub, "marketstream_ticks_filled") > 0, "no gap was filled: the cut cost the hub nothing"
    assert metric(hub, "marketstream_ticks_lost") == 0


# -- Redis losing its data ----------------------------------------------------------------


async def test_flushed_redis_gives_new_epochs_announced_with_reset(procs: Processes, prefix: str) -> None:
    symbols = ["FLA", "FLB"]
    port = free_port()
    procs.redis_server(port)
    url = private_url(port)
    hub = procs.hub(prefix, url)
    feed = procs.feed(prefix, symbols, 100, redis_url=url)
    async with redis_client(url) as redis, stream(hub.ws_url, "json") as client:
        ack = await client.subscribe(symbols)
        old = ack.message["epochs"]
        assert set(old) == set(symbols)
        for symbol in symbols:
            await client.wait_ticks(symbol, 5)
        feed.stop()
        before = {s: client.deliveries(s)[-1].seq for s in symbols}
        await redis.flushall()
        mark = len(client.frames)
        procs.feed(prefix, symbols, 100, redis_url=url)
        for symbol in symbols:
            await client.wait_ticks(symbol, 10, start=mark)
        new = epochs_of(hub)
        resets = {f.message["symbol"]: f for f in client.of_type("reset")}
        assert set(resets) == set(symbols), [f.message for f in client.of_type("reset")]
        for symbol in symbols:
            assert resets[symbol].message["epoch"] == new[symbol] != old[symbol]
            after = client.deliveries(symbol, start=mark)
            assert after[0].index > resets[symbol].index, "a tick of the new epoch before its reset"
            assert consecutive(seqs(after), 1), (
                f"{symbol}: the new epoch's seqs {seqs(after)} (was at {before[symbol]})"
            )
        assert_seq_increasing(client.deliveries(resets=True), lost=0)

        # a client holding a seq of the old epoch is refused and starts over from a snapshot
        async with stream(hub.ws_url, "msgpack") as late:
            since = {s: {"seq": before[s], "epoch": old[s]} for s in symbols}
            ack = await late.subscribe(symbols, since=since, snapshot=False)
            assert ack.message["recovered"] == {s: False for s in symbols}
            assert ack.message["epochs"] == {s: new[s] for s in symbols}
            snapshot = await late.wait_for(lambda f: f.type == "snapshot", start=ack.index)
            assert {t["symbol"] for t in snapshot.message["ticks"]} == set(symbols)


# -- GET /api/v1/history --------------------------------------------------------------------


async def test_history_endpoint(procs: Processes, prefix: str) -> None:
    hub = procs.hub(prefix)
    await run_to_end(procs.feed(prefix, ["HISTA"], 1000, "--ticks", "99", wait=False))
    await run_to_end(procs.feed(prefix, ["EUR/USD"], 1000, "--ticks", "9", wait=False))
    short_env = {"MARKETSTREAM_HISTORY_MAXLEN": str(SHORT_HISTORY)}
    await run_to_end(procs.feed(prefix, ["HISTS"], 1000, "--ticks", "399", wait=False, env=short_env))
    last = catalog(hub.port)
    epochs = epochs_of(hub)
    assert last["HISTA"]["seq"] == 100 and last["EUR/USD"]["seq"] == 10 and last["HISTS"]["seq"] == 400

    def ticks_of(symbol: str, **params: Any) -> list[int]:
        status, body = history(hub, symbol=symbol, **params)
        assert status == 200, body
        assert body["epoch"] == epochs[body["symbol"]]
        assert [t["symbol"] for t in body["ticks"]] == [body["symbol"]] * len(body["ticks"])
        return [t["seq"] for t in body["ticks"]]

    status, body = history(hub, symbol="hista", limit=10)  # upper-cased like the stream's symbols
    assert status == 200, body
    assert body["symbol"] == "HISTA" and body["epoch"] == epochs["HISTA"] and body["first_seq"] == 1
    assert [t["seq"] for t in body["ticks"]] == list(range(91, 101))  # the last 10, oldest first
    assert body["ticks"][-1] == last["HISTA"]
    assert {"symbol", "seq", "ts", "price", "size", "bid", "ask"} <= body["ticks"][0].keys()
    assert ticks_of("HISTA") == list(range(1, 101))  # limit defaults to 100
    assert ticks_of("HISTA", limit=10000) == list(range(1, 101))
    assert ticks_of("HISTA", after_seq=20, limit=5) == [21, 22, 23, 24, 25]
    assert ticks_of("HISTA", after_seq=0, limit=3) == [1, 2, 3]
    assert ticks_of("HISTA", after_seq=97, limit=10) == [98, 99, 100]
    assert ticks_of("HISTA", after_seq=100, limit=10) == []
    assert ticks_of("EUR/USD", limit=2) == [9, 10]
    assert ticks_of("eur/usd", after_seq=8) == [9, 10]
    # trimmed history: first_seq is the oldest kept, and after_seq below it starts there
    status, body = history(hub, symbol="HISTS", limit=1)
    assert status == 200 and [t["seq"] for t in body["ticks"]] == [400]
    kept_from = body["first_seq"]
    assert 1 < kept_from <= 400 - SHORT_HISTORY + 1, kept_from
    assert ticks_of("HISTS", after_seq=0, limit=10000) == list(range(kept_from, 401))

    for params in (
        {"symbol": "HISTA", "limit": 0},
        {"symbol": "HISTA", "limit": 10001},
        {"symbol": "HISTA", "limit": "ten"},
        {"symbol": "HISTA", "after_seq": -1},
        {"symbol": "HISTA", "after_seq": "x"},
        {"symbol": "HIST A!"},
        {"symbol": "X" * 33},
        {"limit": 10},
    ):
        status, body = history(hub, **params)
        assert status == 400 and body["error"] == "bad_request", (params, status, body)
    status, body = history(hub, symbol="NOSUCH")
    assert status == 404 and body["error"] == "unknown_symbol", body
