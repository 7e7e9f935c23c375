"""`python -m loadtest.metrics_plot`: the dashboard's series from a short real run, as a PNG.

Starts a private redis-server as a second shard, a hub (`serve --workers 2`, Redis on two
shards) and a feed (`runfeed --metrics-port`), then plays a script of clients against them
while it scrapes both `/metrics` every `--every` seconds:

- unthrottled clients connect, then throttled ones (250 ms: conflation);
- one client stops reading: it is conflated, then closed with 1013;
- the second shard's Redis is stopped for a few seconds (shard health, dropped ticks) and
  started again (a new epoch for its symbols: resets);
- half of the clients leave.

The plot has the panels of the Grafana dashboard (docker/grafana/): connections, delivery
rate, latency percentiles, conflation and loss, closes, shard health. It needs the `plot`
extra (matplotlib). docs/operations-metrics.png is its output:

    python -m loadtest.metrics_plot --out docs/operations-metrics.png
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import socket
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from loadtest.services import (
    LOOPBACK,
    Service,
    delete_prefix,
    free_port,
    service_env,
    start_feed,
    start_hub,
    start_redis,
    wait_until,
)

REDIS_URL = f"redis://{LOOPBACK}:6379/0"
MSGPACK = Subprotocol("marketstream.v1.msgpack")
SYMBOLS = 60
RATE = 300.0  # ticks/s over all symbols
PER_CLIENT = 10  # symbols per client
QUANTILES = (0.5, 0.9, 0.99)
HUB_ENV = {
    "MARKETSTREAM_SLOW_CLIENT_TIMEOUT": "3",
    "MARKETSTREAM_MAX_PENDING": "100",
    "MARKETSTREAM_SOCKET_SEND_BUFFER": "16384",
    "MARKETSTREAM_LATENCY_SAMPLE_EVERY": "8",
    "MARKETSTREAM_METRICS_SYNC_S": "0.5",
}


@dataclass
class Scrape:
    """One scrape of the hub and the feed: seconds since the start, and their samples."""

    at: float
    samples: dict[str, float] = field(default_factory=dict)

    def get(self, name: str, **labels: str) -> float:
        return self.samples.get(key(name, labels), math.nan)

    def matching(self, name: str, label: str) -> dict[str, float]:
        """label value -> value, of the samples of `name` that have `label` (and no other)."""
        prefix = f'{name}{{{label}="'
        return {k[len(prefix) : -2]: v for k, v in self.samples.items() if k.startswith(prefix)}


def key(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def scrape(url: str) -> dict[str, float]:
    """Every sample of GET `url` (Prometheus text); {} when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {key(s.name, dict(s.labels)): s.value for f in text_string_to_metric_families(text) for s in f.samples}


async def sample(urls: list[str], start: float, every: float, out: list[Scrape], stop: asyncio.Event) -> None:
    """Scrape `urls` every `every` seconds into `out` until `stop`."""
    while not stop.is_set():
        merged: dict[str, float] = {}
        for url in urls:
            merged.update(await asyncio.to_thread(scrape, url))
        out.append(Scrape(time.monotonic() - start, merged))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def reader(ws: ClientConnection) -> None:
    """Read and drop every frame until the connection ends."""
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass


async def client(url: str, symbols: list[str], throttle: int, tasks: list[asyncio.Task[None]]) -> ClientConnection:
    ws = await connect(url, subprotocols=[MSGPACK], max_size=None)
    await ws.send(msgpack.packb({"op": "subscribe", "symbols": symbols, "throttle_ms": throttle}))
    tasks.append(asyncio.get_running_loop().create_task(reader(ws)))
    return ws


async def slow_client(port: int, url: str, symbols: list[str]) -> ClientConnection:
    """A client that subscribes to `symbols` and never reads: a small receive buffer, and
    websockets stops reading from the socket once a few frames wait."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((LOOPBACK, port))
    sock.setblocking(False)
    ws = await connect(url, subprotocols=[MSGPACK], sock=sock, max_queue=4)
    await ws.send(msgpack.packb({"op": "subscribe", "symbols": symbols, "throttle_ms": 0}))
    return ws


@dataclass
class Marks:
    """When the script did what (seconds since the start), for the plot's annotations."""

    events: list[tuple[float, str]] = field(default_factory=list)

    def add(self, start: float, what: str) -> None:
        self.events.append((time.monotonic() - start, what))
        print(f"{self.events[-1][0]:6.1f} s  {what}", flush=True)


async def play(hub_port: int, shard: Service, shard_port: int, log_dir: Path, start: float, marks: Marks) -> None:
    """The script of clients and the shard outage (see the module docstring)."""
    url = f"ws://{LOOPBACK}:{hub_port}/ws/v1/stream"
    names = [f"PLT{i:03d}" for i in range(SYMBOLS)]
    tasks: list[asyncio.Task[None]] = []
    clients: list[ClientConnection] = []

    def pick(i: int) -> list[str]:
        return [names[(i * 7 + k) % SYMBOLS] for k in range(PER_CLIENT)]

    await asyncio.sleep(3)
    clients += [await client(url, pick(i), 0, tasks) for i in range(20)]
    marks.add(start, "20 clients, every tick")
    await asyncio.sleep(7)
    clients += [await client(url, pick(i + 20), 250, tasks) for i in range(20)]
    marks.add(start, "20 clients, 250 ms")
    await asyncio.sleep(7)
    slow = await slow_client(hub_port, url, names)
    marks.add(start, "a client stops reading")
    await asyncio.sleep(10)
    shard.stop()
    marks.add(start, "shard 1 stopped")
    await asyncio.sleep(6)
    restarted = start_redis(shard_port, log_dir)
    marks.add(start, "shard 1 back (empty)")
    await asyncio.sleep(9)
    for ws in clients[::2]:
        await ws.close()
    marks.add(start, "half the clients leave")
    await asyncio.sleep(6)
    for ws in [*clients, slow]:
        with contextlib.suppress(Exception):
            await ws.close()
    for task in tasks:
        task.cancel()
    restarted.stop()


def rates(scrapes: list[Scrape], name: str, window: int = 4, **labels: str) -> tuple[list[float], list[float]]:
    """Per-second rate of a counter over `window` scrapes (as `rate(...[2s])` at 0.5 s)."""
    xs, ys = [], []
    for a, b in zip(scrapes, scrapes[window:], strict=False):
        va, vb = a.get(name, **labels), b.get(name, **labels)
        if not (math.isnan(va) or math.isnan(vb)) and b.at > a.at:
            xs.append(b.at)
            ys.append(max(0.0, vb - va) / (b.at - a.at))
    return xs, ys


def quantile_series(scrapes: list[Scrape], q: float, window: int = 6) -> tuple[list[float], list[float]]:
    """histogram_quantile(q) of the latency over `window` scrapes, in ms (linear in a bucket)."""
    name = "marketstream_tick_latency_seconds_bucket"
    xs, ys = [], []
    for a, b in zip(scrapes, scrapes[window:], strict=False):
        lo, hi = a.matching(name, "le"), b.matching(name, "le")
        bounds = sorted((float(k), hi[k] - lo.get(k, 0.0)) for k in hi)
        total = bounds[-1][1] if bounds else 0.0
        if total <= 0:
            continue
        want, prev_bound, prev_count = q * total, 0.0, 0.0
        for bound, count in bounds:
            if count >= want:
                if math.isinf(bound):
                    value = prev_bound
                else:
                    share = (want - prev_count) / (count - prev_count) if count > prev_count else 1.0
                    value = prev_bound + (bound - prev_bound) * share
                xs.append(b.at)
                ys.append(value * 1000)
                break
            prev_bound, prev_count = bound, count
    return xs, ys


def plot(scrapes: list[Scrape], marks: Marks, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["axes.titlepad"] = 14  # room for the event numbers above each panel
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(13, 11), sharex=True)
    (conn_ax, rate_ax), (lat_ax, conf_ax), (close_ax, shard_ax) = axes
    at = [s.at for s in scrapes]

    conn_ax.plot(at, [s.get("marketstream_connections") for s in scrapes], label="connections")
    conn_ax.plot(
        at, [s.get("marketstream_subscriptions") / PER_CLIENT for s in scrapes], "--", label="subscriptions / 10"
    )
    conn_ax.set_title("Connections (marketstream_connections)")
    conn_ax.set_ylabel("open")

    for name, label in (
        ("marketstream_ticks_sent_total", "ticks sent"),
        ("marketstream_frames_sent_total", "frames sent"),
        ("marketstream_ticks_received_total", "ticks received (both workers)"),
        ("marketstream_feed_ticks_published_total", "feed: ticks published"),
    ):
        rate_ax.plot(*rates(scrapes, name), label=label)
    rate_ax.set_title("Delivery rate (rate of *_total)")
    rate_ax.set_ylabel("per second")

    for q in QUANTILES:
        lat_ax.plot(*quantile_series(scrapes, q), label=f"p{round(q * 100)}")
    lat_ax.set_yscale("log")
    lat_ax.set_title("Latency, feed ts to send (marketstream_tick_latency_seconds)")
    lat_ax.set_ylabel("ms")

    conf_ax.plot(*rates(scrapes, "marketstream_ticks_conflated_total"), label="ticks conflated")
    conf_ax.plot(*rates(scrapes, "marketstream_ticks_lost_total"), label="ticks lost")
    conf_ax.plot(*rates(scrapes, "marketstream_resets_total"), label="resets (new epochs)")
    conf_ax.set_title("Conflation and loss")
    conf_ax.set_ylabel("per second")

    codes = sorted({c for s in scrapes for c in s.matching("marketstream_closes_total", "code")})
    for code in codes:
        ys = [s.matching("marketstream_closes_total", "code").get(code, math.nan) for s in scrapes]
        if any(y > 0 for y in ys if not math.isnan(y)):
            close_ax.step(at, ys, where="post", label=f"closed with {code}")
    close_ax.set_title("Closes by code (marketstream_closes_total, cumulative)")
    close_ax.set_ylabel("connections")
    close_ax.set_xlabel("seconds")

    for shard in sorted({k for s in scrapes for k in s.matching("marketstream_shard_up", "shard")}):
        ys = [s.matching("marketstream_shard_up", "shard").get(shard, math.nan) for s in scrapes]
        shard_ax.step(at, [y + 0.02 * int(shard) for y in ys], where="post", label=f"hub: shard {shard} up")
    for shard in sorted({k for s in scrapes for k in s.matching("marketstream_feed_ticks_dropped_total", "shard")}):
        xs, ys = rates(scrapes, "marketstream_feed_ticks_dropped_total", shard=shard, window=1)
        if any(ys):
            shard_ax.plot(xs, [y / RATE for y in ys], ":", label=f"feed: shard {shard} dropped / rate")
    shard_ax.set_title("Shard health (marketstream_shard_up)")
    shard_ax.set_ylim(-0.1, 1.3)
    shard_ax.set_xlabel("seconds")

    for ax in axes.flat:
        for n, (when, _) in enumerate(marks.events, 1):
            ax.axvline(when, color="grey", linewidth=0.6, alpha=0.6)
            ax.annotate(str(n), (when, 1.0), xycoords=("data", "axes fraction"), fontsize=8, color="dimgrey",
                        ha="center", va="bottom")  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    events = "   ".join(f"{n}: {what}" for n, (_, what) in enumerate(marks.events, 1))
    fig.text(0.5, 0.005, events, ha="center", fontsize=9)
    fig.suptitle(
        f"marketstream, one host: serve --workers 2 on two Redis shards, a feed of {SYMBOLS} symbols at "
        f"{RATE:.0f} ticks/s; /metrics scraped every {scrapes[1].at - scrapes[0].at:.1f} s",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


@contextlib.contextmanager
def running(services: list[Service]) -> Iterator[list[Service]]:
    try:
        yield services
    finally:
        for service in reversed(services):
            service.stop()


async def run(out: Path, every: float) -> None:
    log_dir = Path(tempfile.mkdtemp(prefix="ms-metrics-plot-"))
    prefix = f"msplot-{os.getpid()}"
    shard_port = free_port()
    with running([]) as services:
        shard = start_redis(shard_port, log_dir)
        services.append(shard)
        shards = f"{REDIS_URL},redis://{LOOPBACK}:{shard_port}/0"
        env = service_env(shards, prefix, HUB_ENV, clean=True)
        hub_port = free_port()
        hub = start_hub(hub_port, 2, env, log_dir)
        services.append(hub)
        wait_until(lambda: bool(scrape(f"http://{LOOPBACK}:{hub_port}/metrics")), 30, hub, "the hub's /metrics")
        feed_port = free_port()
        names = [f"PLT{i:03d}" for i in range(SYMBOLS)]
        feed = start_feed(names, RATE, env, log_dir, extra_args=["--metrics-port", str(feed_port)])
        services.append(feed)
        urls = [f"http://{LOOPBACK}:{hub_port}/metrics", f"http://{LOOPBACK}:{feed_port}/metrics"]
        wait_until(lambda: bool(scrape(urls[1])), 30, feed, "the feed's /metrics")
        start = time.monotonic()
        scrapes: list[Scrape] = []
        stop = asyncio.Event()
        sampler = asyncio.get_running_loop().create_task(sample(urls, start, every, scrapes, stop))
        marks = Marks()
        try:
            await play(hub_port, shard, shard_port, log_dir, start, marks)
        finally:
            stop.set()
            await sampler
        for service in (hub, feed):
            if not service.running():
                raise SystemExit(f"{service.name} exited during the run:\n{service.log_tail()}")
    delete_prefix(REDIS_URL, prefix)
    plot(scrapes, marks, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("docs/operations-metrics.png"))
    parser.add_argument("--every", type=float, default=0.5, help="seconds between scrapes")
    args = parser.parse_args(argv)
    asyncio.run(run(args.out, args.every))


if __name__ == "__main__":
    main()
