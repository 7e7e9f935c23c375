"""Several processes sharing one Redis: two hubs deliver the same ticks; a restarted feed continues seq."""

from __future__ import annotations

import asyncio
import signal

from tests.support.client import assert_seq_increasing, stream
from tests.support.processes import REDIS_URL, Processes, catalog


async def test_two_hubs_deliver_the_same_ticks_in_seq_order(procs: Processes, prefix: str) -> None:
    symbols = ["AAPL", "MSFT", "EUR/USD"]
    hub_a = procs.hub(prefix, REDIS_URL)
    hub_b = procs.hub(prefix, REDIS_URL)
    # a first, short feed puts the symbols in the catalog (and gives them a snapshot)
    first = procs.feed(prefix, symbols, 100, "--ticks", "30", "--seed", "1", wait=False)
    assert await asyncio.to_thread(first.wait, 30) == 0, first.log()
    async with stream(hub_a.ws_url, "msgpack") as a, stream(hub_b.ws_url, "json") as b:
        for client in (a, b):
            ack = await client.subscribe(symbols)
            assert ack.message["symbols"] == symbols
        feed = procs.feed(prefix, symbols, 200, "--ticks", "600", "--seed", "2", wait=False)
        assert await asyncio.to_thread(feed.wait, 60) == 0, feed.log()
        last = catalog(hub_a.port)
        assert catalog(hub_b.port) == last
        for client in (a, b):
            for symbol in symbols:
                await client.wait_seq(symbol, last[symbol]["seq"])
        for symbol in symbols:
            seen_a = [(d.symbol, d.seq, d.tick["ts"]) for d in a.deliveries(symbol)]
            seen_b = [(d.symbol, d.seq, d.tick["ts"]) for d in b.deliveries(symbol)]
            assert seen_a == seen_b, f"{symbol}: the two hubs delivered different ticks"
            seqs = [seq for _, seq, _ in seen_a]
            # snapshot (seq of the first feed's last tick), then every tick of the second feed
            assert seqs == list(range(seqs[0], last[symbol]["seq"] + 1)), f"{symbol}: {seqs}"
            assert a.deliveries(symbol)[-1].tick == b.deliveries(symbol)[-1].tick == last[symbol]
        assert_seq_increasing(a.deliveries())
        assert_seq_increasing(b.deliveries())


async def test_feed_restart_continues_seq(procs: Processes, prefix: str) -> None:
    symbols = ["BTC/USD", "NVDA"]
    hub = procs.hub(prefix, REDIS_URL)
    feed = procs.feed(prefix, symbols, 100, "--seed", "1")
    async with stream(hub.ws_url, "msgpack") as client:
        await client.subscribe(symbols)
        for symbol in symbols:
            await client.wait_ticks(symbol, 10)
        feed.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(feed.wait, 15) == 0, f"the feed did not stop cleanly:\n{feed.log()}"
        assert "published" in feed.log()
        stopped = catalog(hub.port)
        for symbol in symbols:
            await client.wait_seq(symbol, stopped[symbol]["seq"])
        mark = len(client.frames)

        # same seed: the same quotes again, but seq must go on from the snapshot
        again = procs.feed(prefix, symbols, 100, "--seed", "1")
        for symbol in symbols:
            await client.wait_ticks(symbol, 10, start=mark)
        again.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(again.wait, 15) == 0, again.log()
        final = catalog(hub.port)
        for symbol in symbols:
            assert final[symbol]["seq"] > stopped[symbol]["seq"]
            await client.wait_seq(symbol, final[symbol]["seq"])
            deliveries = client.deliveries(symbol)
            seqs = [d.seq for d in deliveries]
            # every tick, across the restart: no going back, no repeat, no gap
            assert seqs == list(range(seqs[0], final[symbol]["seq"] + 1)), f"{symbol}: {seqs}"
            resumed = [d for d in deliveries if d.index >= mark]
            assert resumed[0].seq == stopped[symbol]["seq"] + 1
            assert deliveries[-1].tick == final[symbol]
        assert_seq_increasing(client.deliveries())
