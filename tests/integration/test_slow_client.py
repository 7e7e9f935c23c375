"""A client that stops reading is closed (1013, or its TCP connection dropped) within a bounded time,
and does not slow down another client of the same hub.

The hub notices a slow client when a send to it blocks, that is once the kernel's send buffer for
its socket is full. Linux autotunes that buffer up to tcp_wmem's maximum (4 MiB here), which a
feed of 200 ticks/s (~25 kB/s to one client) takes minutes to fill. So the stuck client also asks
for `list` 40 times a second (under the request rate limit): each reply lists its 1000
subscriptions (~37 kB), which fills the buffers in seconds, as a busy real client would.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import socket
import time

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from loadtest.services import Hub
from tests.support.client import assert_seq_increasing, stream
from tests.support.processes import REDIS_URL, Processes, http_get

SLOW_ENV = {
    "MARKETSTREAM_SLOW_CLIENT_TIMEOUT": "1",
    "MARKETSTREAM_MAX_PENDING": "20",
}
SYMBOLS = [f"SLOW{i}" for i in range(8)]  # the fast feed's symbols
FILLER = [f"SLF{i:03d}" for i in range(1000 - len(SYMBOLS))]  # more subscriptions, for big `list` replies


async def metric(hub: Hub, name: str) -> float:
    return await asyncio.to_thread(read_metric, hub, name)


def read_metric(hub: Hub, name: str) -> float:
    status, _, body = http_get(hub.port, "/metrics")
    assert status == 200
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", body, re.MULTILINE)
    assert match, f"{name} not in /metrics:\n{body}"
    return float(match.group(1))


async def keep_asking(ws: ClientConnection) -> None:
    """Send `list` 40 times a second until the connection is gone (or the task is cancelled)."""
    with contextlib.suppress(ConnectionClosed, OSError):
        for i in itertools.count():
            await ws.send(orjson.dumps({"op": "list", "id": i}).decode())
            await asyncio.sleep(1 / 40)


def small_buffer_socket(port: int) -> socket.socket:
    """A connected TCP socket with a small receive buffer, so that a client that stops reading
    fills the path to it quickly instead of after megabytes of kernel buffers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def test_slow_client_is_closed_and_others_keep_receiving(procs: Processes, prefix: str) -> None:
    hub = procs.hub(prefix, REDIS_URL, env=SLOW_ENV)
    procs.feed(prefix, FILLER, 50, "--seed", "3")
    procs.feed(prefix, SYMBOLS, 200, "--seed", "4")
    async with (
        stream(hub.ws_url, "msgpack") as good,
        stream(hub.ws_url, "json", sock=small_buffer_socket(hub.port), max_queue=4) as slow,
    ):
        await good.subscribe(SYMBOLS)
        ack = await slow.subscribe(SYMBOLS + FILLER, snapshot=False)
        assert len(ack.message["symbols"]) == 1000
        await slow.wait_ticks(SYMBOLS[0], 2)
        assert await metric(hub, "marketstream_connections") == 2
        # the slow client stops reading: websockets pauses the transport once max_queue frames wait
        await slow.stop_reading()
        stopped = time.monotonic()
        mark = len(good.frames)
        asker = asyncio.create_task(keep_asking(slow.ws))

        deadline = stopped + 30
        while await metric(hub, 'marketstream_closes_total{code="1013"}') < 1:
            assert time.monotonic() < deadline, "the hub did not close the slow client within 30 s"
            await asyncio.sleep(0.1)
        closed_after = time.monotonic() - stopped
        asker.cancel()
        while await metric(hub, "marketstream_connections") != 1:
            assert time.monotonic() < deadline, "the slow client's connection is still open"
            await asyncio.sleep(0.1)

        # the good client went on receiving meanwhile, and still does
        await asyncio.sleep(1.0)
        during = [d for d in good.deliveries() if d.index >= mark]
        assert during, "the good client received nothing while the slow one was stuck"
        assert during[-1].at - stopped >= closed_after + 0.5
        times = [stopped, *sorted({d.at for d in during})]
        largest_gap = max(b - a for a, b in itertools.pairwise(times))
        assert largest_gap < 1.0, f"the good client got no tick for {largest_gap:.2f} s"
        assert_seq_increasing(good.deliveries())
        # (seq may have gaps: with MAX_PENDING=20 a hub hiccup of 100 ms, such as joining the slow
        # client's 1000 symbols, conflates the good client's outbox too; time gaps are what matter)

        # the slow client reads again: what was buffered, then the close (1013) or a dropped connection
        slow.start_reading()
        code = await slow.wait_closed(within=15)
        assert code in (1013, None), f"slow client closed with {code}, expected 1013 or a dropped connection"
        assert_seq_increasing(slow.deliveries())
        print(f"slow client closed {closed_after:.2f} s after it stopped reading (close code {code})")
    assert closed_after < 20, f"closing the slow client took {closed_after:.1f} s"
