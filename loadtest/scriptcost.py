"""`python -m loadtest.scriptcost`: Redis's instructions per tick in publish.lua, counted.

What it measures: the machine instructions a Redis server executes inside `EVALSHA` of
publish.lua, per tick published, once with bars and once without. The count comes from
valgrind's callgrind (`--toggle-collect=evalGenericCommand`: only the script calls count,
not the network, the event loop or other commands), so it is the same from run to run
whatever else the machine is doing, where CPU time on a shared 2-core machine moves by
±15%. It is what a change to the script (or to what the publisher sends it) buys or costs:
Redis runs every symbol's seq authority on one thread, so instructions per tick set how
many ticks one Redis shard can take (docs/shards.md).

Per variant: a fresh `redis-server` under callgrind on a free port (nothing saved to
disk), a publisher on the production path (feeds.publisher.Publisher, RedisStore, the
pub/sub transport; history 2,000, bars kept 500 or none), `--batches` batches of
`--batch` simulated ticks over `--symbols` generated symbols after an opening batch of
one tick per symbol (not counted in the ticks, but its instructions are: 1 call in
`--batches + 1`), then SIGTERM (Redis exits) and callgrind's total. Nothing subscribes, so
PUBLISH writes to no client. The ticks' timestamps are real, so which bars become final
(at each second's boundary) varies a little between runs: up to about 3% with bars,
0.1% without.

    python -m loadtest.scriptcost [--batches 1000] [--batch 5] [--symbols 100] [--top 0]
        [--keep DIR] [--json-out FILE]

Prints one JSON line `{"runs": [...]}` (instructions per tick and in all, per variant),
then a table; `--top K` adds the K costliest functions of each run (inclusive; Debian's
redis-server is stripped, so the Lua interpreter's own functions show as addresses) and
`--keep DIR` keeps callgrind's files (and the server's log) for `callgrind_annotate`. Needs
valgrind (`apt-get install valgrind`) and redis-server on the PATH; exits 1 without them. A run
takes about 15 s per 1,000 batches per variant (valgrind slows Redis about 50x).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer

from feeds.publisher import Publisher
from feeds.simulated import SimulatedFeed
from feeds.universe import generated
from loadtest.services import ServiceError, free_port, start_redis
from marketstream.adapters.redis_store import RedisStore, connect
from marketstream.adapters.transport import PubSubTransport

PREFIX = "scriptcost"
STARTUP_S = 60.0  # valgrind slows Redis' start too
STOP_S = 120.0  # callgrind writes its file as Redis exits


def valgrind() -> str:
    """valgrind's path; SystemExit saying how to install it when it is missing."""
    path = shutil.which("valgrind")
    if path is None:
        raise SystemExit("loadtest.scriptcost needs valgrind: apt-get install -y valgrind")
    return path


async def publish(url: str, bars: bool, batches: int, batch: int, symbols: int) -> int:
    """Publish the opening and `batches` batches of `batch` ticks; returns the ticks counted."""
    client = connect(url)
    layer = RedisPubSubChannelLayer(hosts=[{"address": url, "socket_timeout": None}], prefix=PREFIX)
    store = RedisStore(client, PREFIX, 2000, 500 if bars else 0)
    publisher = Publisher(store, PubSubTransport(layer, store))
    feed = SimulatedFeed(generated(symbols), seed=1)
    try:
        await publisher.prepare([i.symbol for i in feed.instruments])
        await publisher.publish(feed.opening())
        for _ in range(batches):
            await publisher.publish(feed.batch(batch))
    finally:
        await client.aclose()
        await layer.flush()
    return batches * batch


def total(out_file: Path) -> int:
    """The instructions callgrind counted, from the `totals:` (or `summary:`) line of its file."""
    match = re.search(rb"^(?:totals|summary):\s*(\d+)", out_file.read_bytes(), re.M)
    if match is None:
        raise SystemExit(f"no totals in {out_file}")
    return int(match.group(1))


def top(out_file: Path, count: int) -> list[str]:
    """The `count` costliest functions, inclusive, as callgrind_annotate prints them."""
    annotate = shutil.which("callgrind_annotate")
    if annotate is None or count <= 0:
        return []
    text = subprocess.run([annotate, "--inclusive=yes", str(out_file)], capture_output=True, text=True).stdout
    everything = total(out_file)
    rows = []
    for line in text.splitlines():
        match = re.match(r"\s*([\d,]+) \(", line)
        if match and int(match.group(1).replace(",", "")) < everything:  # not the callers of EVALSHA
            rows.append(line.strip())
    return rows[:count]


def run_once(bars: bool, batches: int, batch: int, symbols: int, folder: Path, top_count: int) -> dict[str, Any]:
    out_file = folder / f"callgrind.{'bars' if bars else 'nobars'}.out"
    callgrind = [valgrind(), "--tool=callgrind", "--toggle-collect=evalGenericCommand"]
    callgrind.append(f"--callgrind-out-file={out_file}")
    port = free_port()
    try:
        server = start_redis(port, folder, STARTUP_S, wrapper=callgrind)
    except ServiceError as exc:
        raise SystemExit(f"redis-server under valgrind did not start: {exc}") from None
    try:
        ticks = asyncio.run(publish(f"redis://127.0.0.1:{port}/0", bars, batches, batch, symbols))
    finally:
        server.stop(timeout=STOP_S)  # SIGTERM: Redis exits, and callgrind writes its file
    instructions = total(out_file)
    return {
        "bars": bars,
        "batch": batch,
        "batches": batches,
        "symbols": symbols,
        "ticks": ticks,
        "instructions": instructions,
        "instructions_per_tick": round(instructions / ticks),
        "top": top(out_file, top_count),
    }


def table(runs: list[dict[str, Any]]) -> str:
    lines = [f"{'variant':<10} {'ticks':>8} {'instructions':>15} {'per tick':>10}"]
    for run in runs:
        name = "bars" if run["bars"] else "no bars"
        lines.append(f"{name:<10} {run['ticks']:>8} {run['instructions']:>15,} {run['instructions_per_tick']:>10,}")
        lines += [f"    {row}" for row in run["top"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=1000, help="batches per variant (default 1000)")
    p.add_argument("--batch", type=int, default=5, help="ticks per batch (default 5: the feed's at 500 ticks/s)")
    p.add_argument("--symbols", type=int, default=100, help="generated symbols (default 100)")
    p.add_argument("--top", type=int, default=0, help="also list the K costliest functions of each run")
    p.add_argument("--keep", type=Path, help="keep callgrind's files in this folder")
    p.add_argument("--json-out", type=Path, help="also write the JSON line to this file")
    args = p.parse_args(argv)
    valgrind()
    with tempfile.TemporaryDirectory(prefix="scriptcost-") as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        runs = [run_once(bars, args.batches, args.batch, args.symbols, folder, args.top) for bars in (True, False)]
    line = json.dumps({"runs": runs})
    print(line)
    if args.json_out:
        args.json_out.write_text(line + "\n")
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
