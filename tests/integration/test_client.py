"""marketstream.client against real hubs, a feed and Redis (docs/client.md).

- the library streams ticks and bars, in both encodings, with every seq accounted for;
- it survives a hub restart in the middle of the stream (1012, reconnect, `since`)
  without a seq gap;
- under a throttle, `conflated` accounts for every seq skipped;
- the errors: a bad key is refused (403) and a revoked key closed (4003) with an
  exception and no reconnect loop; a key over its connection limit (4001) likewise;
- the synchronous wrapper and the callback style.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator

import pytest

from marketstream.client import (
    Bar,
    Client,
    Connected,
    Disconnected,
    Event,
    KeyOverLimit,
    KeyRevoked,
    Refused,
    SyncClient,
    Tick,
)
from tests.support.keys import Deployment, deployment
from tests.support.processes import wait_healthy

SYMBOLS = ["AAPL", "MSFT"]
RATE = 60.0  # ticks/s over SYMBOLS: about 30 per symbol per second
WAIT = 20.0


@pytest.fixture(scope="module")
def dep(redis_url: str) -> Iterator[Deployment]:
    """A hub that requires keys, and a feed of SYMBOLS."""
    with deployment("client", redis_url, [{}], SYMBOLS, RATE) as d:
        yield d


@pytest.fixture(scope="module")
def key(dep: Deployment) -> str:
    return dep.store.create("client-tests")


async def take(client: Client, count: int, kind: type[Event] = Tick, within: float = WAIT) -> list[Event]:
    """Every event until `count` of `kind` came (a failure after `within` seconds)."""
    events: list[Event] = []

    async def collect() -> None:
        async for event in client:
            events.append(event)
            if sum(isinstance(e, kind) for e in events) >= count:
                return

    try:
        await asyncio.wait_for(collect(), within)
    except TimeoutError:
        raise AssertionError(f"fewer than {count} {kind.__name__} within {within} s: {events[-5:]}") from None
    return events


def contiguous(ticks: list[Tick]) -> bool:
    return all(b.seq == a.seq + 1 + b.conflated for a, b in itertools.pairwise(ticks))


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
async def test_the_library_streams_ticks_and_bars(dep: Deployment, key: str, encoding: str) -> None:
    async with Client(dep.hubs[0].ws_url, key=key, encoding=encoding) as client:
        assert client.welcome is not None and client.welcome.encoding == encoding
        ack = await client.subscribe(["aapl", "MSFT", "NOPE"], bars=["1s"])
        assert ack.symbols == ("AAPL", "MSFT") and ack.rejected == {"NOPE": "unknown_symbol"}
        assert set(ack.epochs) == {"AAPL", "MSFT"} and ack.bars == ("1s",)
        events = await take(client, 1, Bar)
        events += await take(client, 40)
        ticks = [e for e in events if isinstance(e, Tick)]
        assert {t.symbol for t in ticks if t.snapshot} == {"AAPL", "MSFT"}, "a snapshot of each first"
        assert all(t.epoch == ack.epochs[t.symbol] for t in ticks)
        for symbol in SYMBOLS:
            mine = [t for t in ticks if t.symbol == symbol]
            assert contiguous(mine), [t.seq for t in mine]
            # the client counts what it received, which may run ahead of the events taken here
            assert client.stats[symbol].gaps == 0 and client.stats[symbol].ticks >= len(mine)
        bars = [e for e in events if isinstance(e, Bar)]
        assert bars[0].symbol in SYMBOLS and bars[0].interval == "1s" and bars[0].high >= bars[0].low
        assert await client.unsubscribe(["MSFT"]) and "MSFT" not in client.subscriptions
        assert abs(await client.ping() - time.time_ns()) < 5e9


async def test_a_hub_restart_in_the_middle_loses_no_seq(dep: Deployment, key: str) -> None:
    hub = dep.hubs[0]
    async with Client(hub.ws_url, key=key) as client:
        await client.subscribe(SYMBOLS)
        before = await take(client, 30)
        await asyncio.to_thread(hub.stop)  # SIGTERM: uvicorn closes its connections with 1012
        events = await take(client, 1, Disconnected)
        assert [e.code for e in events if isinstance(e, Disconnected)] == [1012]
        restarted = dep.procs.hub(dep.prefix, dep.store.redis_url, env=dep.store.env(), port=hub.port, wait=False)
        dep.hubs[0] = restarted
        await asyncio.to_thread(wait_healthy, restarted)
        after = await take(client, 1, Connected, within=60)
        after += await take(client, 60)
        assert client.connections == 2
        assert client.recovered == {"AAPL": True, "MSFT": True}, "the missed ticks came from history"
        ticks = [e for e in before + events + after if isinstance(e, Tick)]
        for symbol in SYMBOLS:
            mine = [t for t in ticks if t.symbol == symbol]
            assert contiguous(mine), f"{symbol}: a gap across the restart: {[t.seq for t in mine]}"
            assert all(t.conflated == 0 for t in mine)
            stats = client.stats[symbol]
            assert (stats.lost, stats.missed, stats.duplicates) == (0, 0, 0)


async def test_conflated_accounts_for_every_seq_under_a_throttle(dep: Deployment, key: str) -> None:
    async with Client(dep.hubs[0].ws_url, key=key) as client:
        ack = await client.subscribe(SYMBOLS, throttle_ms=250)
        assert ack.throttle_ms == 250
        started = time.monotonic()
        events = await take(client, 16)
        elapsed = time.monotonic() - started
        ticks = [e for e in events if isinstance(e, Tick)]
        live = [t for t in ticks if not t.snapshot]
        assert sum(t.conflated for t in live) >= 3 * len(live), "about 7 ticks merged in each delivery"
        for symbol in SYMBOLS:
            mine = [t for t in ticks if t.symbol == symbol]
            assert contiguous(mine), [(t.seq, t.conflated) for t in mine]
            assert client.stats[symbol].lost == 0
            assert client.stats[symbol].conflated == sum(t.conflated for t in mine)
        assert elapsed >= (len(live) / 2 - 1) * 0.25, "at most one tick per symbol every 250 ms"


async def test_a_bad_key_is_refused_at_once_without_a_loop(dep: Deployment) -> None:
    started = time.monotonic()
    with pytest.raises(Refused) as caught:
        async with Client(dep.hubs[0].ws_url, key="ms_" + "x" * 43):
            pass
    assert caught.value.status == 403 and time.monotonic() - started < 5


async def test_revocation_ends_the_stream_with_key_revoked(dep: Deployment) -> None:
    key = dep.store.create("to-revoke")
    client = Client(dep.hubs[0].ws_url, key=key)
    await client.connect()
    try:
        await client.subscribe(["AAPL"])
        await take(client, 2)
        await asyncio.to_thread(dep.store.revoke, "to-revoke")
        with pytest.raises(KeyRevoked) as caught:
            await take(client, 10_000, within=15)
        assert caught.value.code == 4003 and "revoked" in str(caught.value)
        assert client.connections == 1, "no reconnect"
        with pytest.raises(KeyRevoked):
            await client.subscribe(["MSFT"])
    finally:
        await client.close()


async def test_a_key_over_its_connection_limit_gets_key_over_limit(dep: Deployment) -> None:
    key = dep.store.create("one-connection", "--max-connections", "1")
    async with Client(dep.hubs[0].ws_url, key=key):
        with pytest.raises(KeyOverLimit) as caught:
            async with Client(dep.hubs[0].ws_url, key=key):
                pass
        assert caught.value.code == 4001


async def test_the_sync_client_and_the_callback_style(dep: Deployment, key: str) -> None:
    def sync() -> list[Tick]:
        with SyncClient(dep.hubs[0].ws_url, key=key) as client:
            client.subscribe(["AAPL"], throttle_ms=100)
            return list(itertools.islice(client.ticks(timeout=WAIT), 5))

    ticks = await asyncio.to_thread(sync)
    assert len(ticks) == 5 and {t.symbol for t in ticks} == {"AAPL"} and contiguous(ticks)

    got: list[Tick] = []
    async with Client(dep.hubs[0].ws_url, key=key) as client:
        await client.subscribe(["MSFT"])

        async def on_tick(tick: Tick) -> None:
            got.append(tick)
            if len(got) == 5:
                await client.close()

        await asyncio.wait_for(client.run(on_tick=on_tick), WAIT)
    assert len(got) >= 5 and {t.symbol for t in got} == {"MSFT"} and contiguous(got), "then what was queued"
