"""A dead shard hurts only its symbols: the other shard's ticks keep flowing, the dead one's
symbols are `unavailable`, and everything resumes when it is back (docs/shards.md).

Each test starts its own two redis-servers (it stops one of them; never the shared 6379).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import time

from loadtest.services import Hub, Service, wait_until
from marketstream.adapters.shards import shard_of
from tests.integration.test_shards import SYMBOLS, start_shards, wait_snapshots
from tests.support.client import StreamClient, assert_seq_increasing, stream
from tests.support.processes import Processes, http_json

ON_0 = [s for s in SYMBOLS if shard_of(s, 2) == 0]
ON_1 = [s for s in SYMBOLS if shard_of(s, 2) == 1]


def health(hub: Hub) -> tuple[int, dict[str, object]]:
    status, body = http_json(hub.port, "/healthz")
    return status, body


def shard_state(hub: Hub, index: int) -> str:
    _, body = health(hub)
    shards = body.get("shards")
    assert isinstance(shards, list), body
    return str(shards[index]["state"])


async def wait_state(hub: Hub, index: int, state: str, within: float = 20) -> None:
    await asyncio.to_thread(
        wait_until, lambda: shard_state(hub, index) == state, within, hub, f"/healthz: shard {index} {state}"
    )


def quiet(service: Service, what: str) -> None:
    """One line when shard 1 goes, one when it is back, and no traceback."""
    log = service.log()
    assert "Traceback" not in log, f"{what} logged a traceback:\n{log}"
    assert len(re.findall(r"shard 1 \(.*\) is down since", log)) == 1, log
    assert len(re.findall(r"shard 1 \(.*\) is back after", log)) == 1, log


async def start(procs: Processes, prefix: str, env: dict[str, str]) -> tuple[list[Service], list[int], Hub, Service]:
    ports, servers, url = start_shards(procs, 2)
    hub = procs.hub(prefix, url, env=env)
    feed = procs.feed(prefix, SYMBOLS, 400, "--seed", "6", redis_url=url, wait=False, env=env)
    await asyncio.to_thread(wait_snapshots, feed, prefix, SYMBOLS, ports)
    return servers, ports, hub, feed


async def flowing(client: StreamClient, symbols: list[str], count: int = 10, within: float = 10) -> None:
    mark = len(client.frames)
    for symbol in symbols:
        await client.wait_ticks(symbol, count, start=mark, within=within)


async def test_killed_shard_unavailable_then_back(procs: Processes, prefix: str) -> None:
    grace = 4.0
    env = {"MARKETSTREAM_SHARD_GRACE_S": str(grace), "MARKETSTREAM_SHARD_TIMEOUT_S": "1"}
    servers, ports, hub, feed = await start(procs, prefix, env)
    async with stream(hub.ws_url, "msgpack") as a:
        ack = await a.subscribe(SYMBOLS)
        assert not ack.message["rejected"], ack.message
        await flowing(a, SYMBOLS)

        servers[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await asyncio.to_thread(servers[1].wait, 10)
        await wait_state(hub, 1, "down")
        status, body = health(hub)
        assert status == 200 and body["status"] == "degraded", body
        await flowing(a, ON_0)  # the other shard's symbols keep flowing

        async with stream(hub.ws_url, "json") as b:  # new subscriptions of its symbols: unavailable
            ack = await b.subscribe(SYMBOLS)
            assert ack.message["symbols"] == ON_0, ack.message
            assert ack.message["rejected"] == {s: "unavailable" for s in ON_1}, ack.message
            await flowing(b, ON_0)

        # after the grace period, the hub gives up on the dead shard's subscriptions
        ended = await a.wait_for(lambda f: f.type == "unsubscribed", within=grace + 10)
        assert ended.message == {"type": "unsubscribed", "symbols": ON_1, "reason": "unavailable"}, ended.message
        assert time.monotonic() - killed >= grace
        listed = await a.request("list")
        assert [s["symbol"] for s in listed.message["subscriptions"]] == sorted(ON_0)

        procs.redis_server(ports[1])  # back, empty
        await wait_state(hub, 1, "up")
        status, body = health(hub)
        assert status == 200 and body["status"] == "ok", body
        ack = await a.subscribe(ON_1)
        assert ack.message["symbols"] == ON_1 and not ack.message["rejected"], ack.message
        await flowing(a, SYMBOLS)
        # seq goes up until the end, and again from the new subscription (a new epoch: the
        # restarted shard kept no data)
        assert_seq_increasing(d for d in a.deliveries(resets=True) if d.index < ended.index)
        assert_seq_increasing(d for d in a.deliveries(start=ack.index) if d.tick["symbol"] in ON_1)
        assert_seq_increasing(d for d in a.deliveries() if d.tick["symbol"] in ON_0)
    quiet(feed, "the feed")
    quiet(hub, "the hub")
    assert re.search(r"shard 1 .* is back after [0-9.]+ s: \d+ ticks of its symbols were not published", feed.log())


async def test_silent_shard_does_not_stall_the_others(procs: Processes, prefix: str) -> None:
    """A shard that stops answering without closing anything (SIGSTOP: as a link that drops
    packets) costs the feed at most one timeout; its subscriptions resume, without a gap."""
    env = {"MARKETSTREAM_SHARD_GRACE_S": "60", "MARKETSTREAM_SHARD_TIMEOUT_S": "1"}
    servers, _ports, hub, feed = await start(procs, prefix, env)
    async with stream(hub.ws_url, "msgpack") as a:
        await a.subscribe(SYMBOLS)
        await flowing(a, SYMBOLS)
        mark = len(a.frames)

        servers[1].send_signal(signal.SIGSTOP)
        try:
            await wait_state(hub, 1, "down")
            await flowing(a, ON_0, count=30)
            await asyncio.sleep(2.0)
        finally:
            servers[1].send_signal(signal.SIGCONT)
        # the longest wait between two ticks of the live shard while the other was silent
        arrivals = sorted({d.at for d in a.deliveries() if d.index >= mark and d.tick["symbol"] in ON_0})
        longest = max(b - a for a, b in itertools.pairwise(arrivals))
        assert longest < 2.5, f"the live shard's ticks stalled {longest:.2f} s"

        await wait_state(hub, 1, "up")
        await flowing(a, SYMBOLS)
        assert not a.of_type("unsubscribed") and not a.of_type("reset")
        assert_seq_increasing(a.deliveries())  # nothing lost: what the hub missed came from history
    quiet(feed, "the feed")
    quiet(hub, "the hub")  # no second outage when the hub's link is made to connect again
    print(f"\nsilent shard: the live shard's ticks waited at most {longest:.2f} s")
