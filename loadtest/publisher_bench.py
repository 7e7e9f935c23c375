"""What bars cost at the publisher: ticks/s one feed worker publishes, with and without bars.

    python -m loadtest.publisher_bench [--seconds 5] [--batches 10,100] [--symbols 100] [--rounds 2]
                                       [--listeners 0] [--redis-url URL]

One process, one publisher (feeds.publisher.Publisher) on the production path: a Redis store
and the pub/sub transport, so each batch is one call of publish.lua. It publishes simulated
quotes as fast as it can, in batches of a fixed size (the feed batches what is due every
10 ms: 10 ticks a batch at 1,000 ticks/s, 100 at 10,000), for `--seconds`, once with bars
(MARKETSTREAM_BARS_KEEP 500, the default, and the feed's timer ending bars every second)
and once without (0), alternating for `--rounds`. Reported per run: ticks/s, the
publisher's CPU per tick, and Redis's CPU per tick (from INFO, so other clients of the same
Redis count too: run it on a quiet one). No hub listens unless `--listeners N`: then N
`redis-cli` processes subscribe to every tick and bars channel, as N hubs (one connection
each per shard) would, so that Redis's CPU per tick includes writing each tick to them:
what one Redis shard carries (docs/shards.md) is about 1e6 / (Redis µs per tick) ticks/s.

Prints one JSON line (the runs), then a readable table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
import uuid
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer
from redis import asyncio as aioredis

from feeds.publisher import Publisher
from feeds.runner import finalize_bars
from feeds.simulated import SimulatedFeed
from feeds.universe import generated
from marketstream.adapters.redis_store import RedisStore, connect
from marketstream.adapters.transport import BARS_PREFIX, GROUP_PREFIX, PubSubTransport, group_name

REDIS_URL = "redis://127.0.0.1:6379/0"


async def redis_cpu(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def start_listeners(url: str, channels: list[str], count: int) -> list[subprocess.Popen[bytes]]:
    """`count` redis-cli processes subscribed to `channels`, reading and discarding."""
    binary = shutil.which("redis-cli")
    if count and binary is None:
        raise SystemExit("--listeners needs redis-cli (apt-get install redis-tools)")
    argv = [str(binary), "-u", url, "subscribe", *channels]
    return [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)]


async def run_once(
    url: str, bars: bool, batch: int, seconds: float, symbols: int, listeners: int = 0
) -> dict[str, Any]:
    prefix = f"pubbench-{uuid.uuid4().hex[:8]}"
    client = connect(url)
    layer = RedisPubSubChannelLayer(hosts=[{"address": url, "socket_timeout": None}], prefix=prefix)
    store = RedisStore(client, prefix, 2000, 500 if bars else 0)
    publisher = Publisher(store, PubSubTransport(layer, store))
    feed = SimulatedFeed(generated(symbols), seed=1)
    names = [i.symbol for i in feed.instruments]
    channel_of = layer._get_layer()._get_group_channel_name
    channels = [channel_of(group_name(kind, n)) for n in names for kind in (GROUP_PREFIX, BARS_PREFIX)]
    subscribers = start_listeners(url, channels, listeners)
    if subscribers:
        await asyncio.sleep(1.0)  # they have subscribed
    stop = asyncio.Event()
    timer = asyncio.get_running_loop().create_task(finalize_bars(publisher, names, stop)) if bars else None
    try:
        await publisher.prepare(names)
        await publisher.publish(feed.opening())
        sent = 0
        cpu0, redis0, start = time.process_time(), await redis_cpu(client), time.monotonic()
        while time.monotonic() - start < seconds:
            await publisher.publish(feed.batch(batch))
            sent += batch
        elapsed = time.monotonic() - start
        cpu, redis_used = time.process_time() - cpu0, await redis_cpu(client) - redis0
    finally:
        stop.set()
        for process in subscribers:
            process.terminate()
            process.wait()
        if timer is not None:
            await timer
        keys = [k async for k in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await layer.flush()
    return {
        "bars": bars,
        "batch": batch,
        "symbols": symbols,
        "listeners": listeners,
        "seconds": round(elapsed, 2),
        "ticks": sent,
        "ticks_per_s": round(sent / elapsed),
        "publisher_cpu_us_per_tick": round(cpu / sent * 1e6, 2),
        "redis_cpu_us_per_tick": round(redis_used / sent * 1e6, 2),
    }


def table(runs: list[dict[str, Any]]) -> str:
    lines = [f"{'batch':>6} {'bars':>5} {'hubs':>5} {'ticks/s':>9} {'publisher us/tick':>18} {'redis us/tick':>14}"]
    for r in runs:
        lines.append(
            f"{r['batch']:>6} {'yes' if r['bars'] else 'no':>5} {r['listeners']:>5} {r['ticks_per_s']:>9} "
            f"{r['publisher_cpu_us_per_tick']:>18} {r['redis_cpu_us_per_tick']:>14}"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = []
    for batch in args.batches:
        for _ in range(args.rounds):
            for bars in (False, True):
                runs.append(await run_once(args.redis_url, bars, batch, args.seconds, args.symbols, args.listeners))
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per run (default 5)")
    p.add_argument("--batches", default="10,100", help="comma-separated batch sizes (default 10,100)")
    p.add_argument("--symbols", type=int, default=100, help="generated symbols (default 100)")
    p.add_argument("--rounds", type=int, default=2, help="runs of each variant, alternating (default 2)")
    p.add_argument("--listeners", type=int, default=0, help="redis-cli subscribers of every channel (as hubs)")
    p.add_argument("--redis-url", default=REDIS_URL)
    args = p.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    runs = asyncio.run(main_async(args))
    print(json.dumps({"runs": runs}))
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
