"""`python -m loadtest.receive`: what receiving one tick from Redis costs a hub, with nothing
after it: the CPU per message of the sharded pub/sub channel layer
(`ShardedPubSubChannelLayer`) and the transport's decoding (`LayerTransport.receive`).

A receiving process (uvloop, as the hub) opens a `LayerTransport` on the layer and joins
`--symbols` symbol groups. A publisher process waits until Redis counts a subscriber on
every group's channel, then PUBLISHes `--messages` tick messages round the groups, in
publish.lua's format (msgpack of `to_message` of a completed `Draft`), in pipelined
batches of `--batch` every `--interval-ms` (a feed's batch, which reaches the hub as
several messages in one read). The receiver reports one JSON line: its CPU per message
(`process_time` from the first message to the last, over all but the first), the
messages it received and the publisher published, and how many of them the layer's
`ShardConnection._drain` delivered straight from hiredis' reader (`drained`; every other
one took a redis-py `get_message`). It exits 1 when a message is missing.

`--no-drain` turns the drain off (a no-op `_drain` on the shard: every message takes
`get_message`). `--compare` runs with and without it, `--repeat` times each, alternated
(drain first, then no-drain first, ...), and prints both medians and their ratio:

    python -m loadtest.receive --compare
    python -m loadtest.receive --batch 1 --no-drain

Each run has a prefix of its own (a uuid) and leaves nothing in Redis (REDIS_URL, or
`--redis-url`; default redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any

import msgpack

from marketstream.adapters.layer import ShardedPubSubChannelLayer
from marketstream.adapters.transport import GROUP_PREFIX, LayerTransport, group_name, to_message
from marketstream.core.tick import Draft, now_ns

SUBSCRIBED_TIMEOUT = 10.0  # seconds the publisher waits for the receiver's subscriptions
GONE_AFTER = 2.0  # seconds without a message, once the publisher is done: the rest is lost


async def no_drain(pubsub: Any) -> None:
    """A shard's `_drain` that takes nothing: every message takes `get_message`."""


def publish(url: str, channels: list[str], symbols: list[str], args: argparse.Namespace, pipe: Pipe) -> None:
    """The publisher process: `args.messages` tick messages round `channels`, in pipelined
    batches of `args.batch` every `args.interval_ms`; sends back how many it published."""
    import redis

    with redis.Redis.from_url(url) as client:
        deadline = time.monotonic() + SUBSCRIBED_TIMEOUT
        while not all(count >= 1 for _, count in client.pubsub_numsub(*channels)):
            if time.monotonic() > deadline:
                raise SystemExit(f"publisher: the receiver did not subscribe in {SUBSCRIBED_TIMEOUT:.0f} s")
            time.sleep(0.01)
        pause = args.interval_ms / 1000
        epoch = uuid.uuid4().hex[:8]
        published = 0
        while published < args.messages:
            pipeline = client.pipeline(transaction=False)
            for _ in range(min(args.batch, args.messages - published)):
                k = published % len(channels)
                published += 1
                fields = {
                    "symbol": symbols[k],
                    "ts": now_ns(),
                    "price": 100.25,
                    "size": 3.0,
                    "bid": 100.2,
                    "ask": 100.3,
                }
                tick = Draft.encode(fields).complete(published, epoch)
                pipeline.publish(channels[k], msgpack.packb(to_message(tick)))
            pipeline.execute()
            time.sleep(pause)
    pipe.send(published)


@dataclass
class Received:
    """The receiver's progress, read by the watchdog."""

    got: int = 0
    cpu0: float = 0.0
    cpu1: float = 0.0
    wall0: float = 0.0
    wall1: float = 0.0


async def take(transport: LayerTransport, n: int, state: Received) -> None:
    """Receive `n` ticks; the clock starts after the first."""
    receive = transport.receive
    await receive()
    state.got = 1
    state.cpu0, state.wall0 = time.process_time(), time.monotonic()
    while state.got < n:
        await receive()
        state.got += 1
    state.cpu1, state.wall1 = time.process_time(), time.monotonic()


async def run(args: argparse.Namespace, drain: bool) -> dict[str, Any]:
    """One run: a layer under a prefix of its own, its publisher, the measure."""
    layer = ShardedPubSubChannelLayer(hosts=[args.redis_url], prefix=f"recv{uuid.uuid4().hex[:12]}")
    inner = layer._get_layer()
    if not drain:
        for shard in inner.shards:
            shard._drain = no_drain  # type: ignore[method-assign]
    transport = LayerTransport(layer, None)  # type: ignore[arg-type]  # receives only: no store
    loop = asyncio.get_running_loop()
    proc: Any = None
    try:
        await transport.open()
        symbols = [f"S{i:03d}" for i in range(args.symbols)]
        for symbol in symbols:
            await transport.join(symbol)
        channels = [inner._get_group_channel_name(group_name(GROUP_PREFIX, s)) for s in symbols]
        here, there = multiprocessing.Pipe()
        proc = multiprocessing.get_context("spawn").Process(
            target=publish, args=(args.redis_url, channels, symbols, args, there), daemon=True
        )
        proc.start()
        there.close()  # the publisher's end
        state = Received()
        receiving = asyncio.create_task(take(transport, args.messages, state))
        seen, quiet_since = 0, time.monotonic()
        while not receiving.done():  # a watchdog: stop when messages stop coming
            await asyncio.wait([receiving], timeout=0.5)
            now = time.monotonic()
            if state.got != seen:
                seen, quiet_since = state.got, now
            elif not receiving.done() and now - quiet_since > (args.stall_s if proc.is_alive() else GONE_AFTER):
                state.cpu1, state.wall1 = time.process_time(), time.monotonic()
                receiving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiving
                break
        if not receiving.cancelled():
            receiving.result()  # raises what stopped it
        await loop.run_in_executor(None, proc.join, 30)
        published = here.recv() if here.poll(0) else 0
        here.close()
    finally:
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(5)
        await layer.flush()
    counted = max(state.got - 1, 1)
    return {
        "drain": drain,
        "published": published,
        "messages": state.got,
        "batch": args.batch,
        "seconds": round(state.wall1 - state.wall0, 3) if state.got > 1 else 0.0,
        "cpu_us_per_message": round((state.cpu1 - state.cpu0) / counted * 1e6, 2) if state.got > 1 else 0.0,
        "drained": sum(shard.drained for shard in inner.shards),
        "publisher_exit": proc.exitcode,
    }


def one(args: argparse.Namespace, drain: bool) -> dict[str, Any]:
    import uvloop

    result: dict[str, Any] = uvloop.run(run(args, drain))
    if result["messages"] != args.messages or result["published"] != args.messages:
        print(
            f"receive: got {result['messages']} of {result['published']} published ({args.messages} asked; "
            f"publisher exit {result['publisher_exit']})",
            file=sys.stderr,
        )
        result["complete"] = False
    else:
        result["complete"] = True
    return result


def compare(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    runs: list[dict[str, Any]] = []
    for k in range(args.repeat):
        for drain in (True, False) if k % 2 == 0 else (False, True):
            runs.append(one(args, drain))
    medians = {}
    for name, drain in (("drain", True), ("no_drain", False)):
        mine = [r for r in runs if r["drain"] is drain]
        medians[name] = {
            "cpu_us_per_message": round(statistics.median(r["cpu_us_per_message"] for r in mine), 2),
            "drained": statistics.median(r["drained"] for r in mine),
            "seconds": round(statistics.median(r["seconds"] for r in mine), 3),
        }
    with_drain = medians["drain"]["cpu_us_per_message"]
    ratio = round(medians["no_drain"]["cpu_us_per_message"] / with_drain, 3) if with_drain else None
    document = {"runs": runs, "medians": medians, "ratio_no_drain_over_drain": ratio}
    return document, all(r["complete"] for r in runs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=20000, help="tick messages to publish")
    p.add_argument("--batch", type=int, default=5, help="messages per pipelined batch")
    p.add_argument("--interval-ms", type=float, default=1.0, help="pause after each batch")
    p.add_argument("--symbols", type=int, default=20, help="symbol groups joined (messages go round them)")
    p.add_argument("--no-drain", action="store_true", help="every message takes get_message (no _drain)")
    p.add_argument("--compare", action="store_true", help="with and without the drain, alternated")
    p.add_argument("--repeat", type=int, default=3, help="runs of each with --compare")
    p.add_argument("--stall-s", type=float, default=10.0, help="give up after this long without a message")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = p.parse_args(argv)
    if args.messages < 2 or args.batch < 1 or args.symbols < 1 or args.repeat < 1:
        p.error("--messages must be at least 2, --batch, --symbols and --repeat at least 1")
    if args.compare:
        document, complete = compare(args)
        print(json.dumps({"args": vars(args), **document}))
        print(
            f"CPU per message received, medians of {args.repeat}: "
            f"drain {document['medians']['drain']['cpu_us_per_message']} us, "
            f"no drain {document['medians']['no_drain']['cpu_us_per_message']} us, "
            f"no drain / drain {document['ratio_no_drain_over_drain']}"
        )
    else:
        result = one(args, not args.no_drain)
        complete = result["complete"]
        print(json.dumps({"args": vars(args), **result}))
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
