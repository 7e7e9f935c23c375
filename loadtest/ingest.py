"""How many ticks per second one hub process accepts over HTTP ingest (POST /api/v1/ticks)
and publishes, with history, snapshot and bar writes (publish.lua), on Redis.

    python -m loadtest.ingest [--seconds 10] [--batch 1000] [--symbols 100] [--connections 4]
                              [--format json|msgpack] [--no-bars] [--profile FILE.svg]

Starts a hub (`python -m marketstream.serve`, one process) on the Redis at --redis-url
under a fresh prefix, with a throw-away key database holding a key that may publish.
The load generator (this process, asyncio on raw keep-alive HTTP/1.1 connections, the
request bodies built once) keeps `--connections` requests of `--batch` ticks in flight.
After a warm-up it measures for `--seconds`: ticks accepted per second (the `accepted`
of 200 answers), the hub's CPU per tick, Redis's CPU per tick (INFO: other users of the
Redis count too), and at the end checks that Redis holds what was accepted (the sum of
the symbols' seqs, and history). With `--profile`, py-spy (pip install py-spy) records
the hub during the window. Prints one JSON line, then a readable summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack
import redis

from loadtest.keys import key_database
from loadtest.services import (
    LOOPBACK,
    ProcessMeter,
    ServiceError,
    delete_prefix,
    free_port,
    service_env,
    start_hub,
    wait_until,
)

REDIS_URL = "redis://127.0.0.1:6379/0"


def bodies(symbols: int, batch: int, fmt: str, variants: int = 8) -> list[bytes]:
    """Request bodies of `batch` ticks over `symbols` symbols (a few variants, built once)."""
    rnd = random.Random(7)
    out = []
    for _ in range(variants):
        ticks = []
        for _ in range(batch):
            price = round(rnd.uniform(10, 500), 2)
            tick = {
                "symbol": f"ING{rnd.randrange(symbols):04d}",
                "price": price,
                "size": float(rnd.randrange(1, 1000)),
                "bid": round(price - 0.01, 2),
                "ask": round(price + 0.01, 2),
                "src_ts": time.time_ns(),
            }
            ticks.append(tick)
        body = {"ticks": ticks}
        out.append(msgpack.packb(body) if fmt == "msgpack" else json.dumps(body, separators=(",", ":")).encode())
    return out


class Poster:
    """One keep-alive HTTP/1.1 connection that posts bodies one after another."""

    def __init__(self, port: int, key: str, fmt: str) -> None:
        self.port = port
        self.head = (
            f"POST /api/v1/ticks HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/{fmt}\r\n"
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, dict[str, Any]]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(LOOPBACK, self.port)
        self.writer.write(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length, chunked = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        data = await self._chunks() if chunked else await self.reader.readexactly(length)
        try:
            return status, json.loads(data)
        except ValueError:
            raise ServiceError(f"the hub answered {head!r} {data[:300]!r}") from None

    async def _chunks(self) -> bytes:
        assert self.reader is not None
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await self.reader.readexactly(size + 2))
            if size == 0:
                return b"".join(p[:-2] for p in parts)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


class Load:
    def __init__(self) -> None:
        self.accepted = 0
        self.requests = 0
        self.errors: dict[int, int] = {}
        self.latencies: list[float] = []


async def drive(
    port: int, key: str, payloads: list[bytes], fmt: str, connections: int, stop: asyncio.Event, load: Load
) -> None:
    async def one(k: int) -> None:
        poster = Poster(port, key, fmt)
        try:
            n = k
            while not stop.is_set():
                started = time.monotonic()
                status, body = await poster.post(payloads[n % len(payloads)])
                load.latencies.append(time.monotonic() - started)
                n += 1
                load.requests += 1
                if status == 200:
                    load.accepted += int(body["accepted"])
                else:
                    load.errors[status] = load.errors.get(status, 0) + 1
        finally:
            await poster.close()

    await asyncio.gather(*(one(k) for k in range(connections)))


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def stored(client: redis.Redis, prefix: str) -> int:
    return sum(int(v) for v in client.hgetall(f"{prefix}:seq").values())


async def measure(args: argparse.Namespace, port: int, key: str, hub_pid: int, prefix: str) -> dict[str, Any]:
    payloads = bodies(args.symbols, args.batch, args.format)
    client = redis.Redis.from_url(args.redis_url)
    load = Load()
    stop = asyncio.Event()
    task = asyncio.ensure_future(drive(port, key, payloads, args.format, args.connections, stop, load))
    await asyncio.sleep(args.warmup)
    meter = ProcessMeter(hub_pid)
    profiler = None
    if args.profile:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        profiler = subprocess.Popen(  # noqa: ASYNC220 (started once, before the window)
            [
                py_spy,
                "record",
                "-p",
                str(hub_pid),
                "-o",
                args.profile,
                "-d",
                str(int(args.seconds)),
                "-r",
                "200",
                "-f",
                "raw" if args.profile.endswith((".txt", ".folded")) else "flamegraph",
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
    accepted0, requests0, cpu0, redis0 = load.accepted, load.requests, meter.cpu_seconds(), redis_cpu(client)
    lat0 = len(load.latencies)
    started = time.monotonic()
    await asyncio.sleep(args.seconds)
    elapsed = time.monotonic() - started
    accepted, requests = load.accepted - accepted0, load.requests - requests0
    cpu, redis_used = meter.cpu_seconds() - cpu0, redis_cpu(client) - redis0
    latencies = sorted(load.latencies[lat0:])
    stop.set()
    await task
    if profiler is not None:
        profiler.wait(60)
    total = stored(client, prefix)
    history = client.xlen(f"{prefix}:history:ING0000")
    client.close()
    return {
        "batch": args.batch,
        "symbols": args.symbols,
        "connections": args.connections,
        "format": args.format,
        "bars": not args.no_bars,
        "seconds": round(elapsed, 2),
        "ticks_per_s": round(accepted / elapsed),
        "requests_per_s": round(requests / elapsed, 1),
        "p50_request_ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
        "hub_cpu_us_per_tick": round(cpu / max(1, accepted) * 1e6, 2),
        "hub_cpu_share": round(cpu / elapsed, 2),
        "redis_cpu_us_per_tick": round(redis_used / max(1, accepted) * 1e6, 2),
        "errors": load.errors,
        "accepted_total": load.accepted,
        "stored_total": total,
        "history_ING0000": history,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--batch", type=int, default=1000, help="ticks per request (default 1000)")
    p.add_argument("--symbols", type=int, default=100)
    p.add_argument("--connections", type=int, default=4, help="requests in flight (default 4)")
    p.add_argument("--format", choices=("json", "msgpack"), default="json")
    p.add_argument("--no-bars", action="store_true", help="the hub with MARKETSTREAM_BARS_KEEP=0")
    p.add_argument("--profile", metavar="FILE.svg", help="record the hub with py-spy during the window")
    p.add_argument("--redis-url", default=REDIS_URL)
    args = p.parse_args(argv)
    prefix = f"ingestbench-{uuid.uuid4().hex[:8]}"
    logs = Path(f"/tmp/{prefix}")
    logs.mkdir()
    with key_database("ingest", publish=True) as keys:
        extra = {**keys.env, "LOG_LEVEL": "WARNING", "MARKETSTREAM_BARS_KEEP": "0" if args.no_bars else "500"}
        hub = start_hub(free_port(), 1, service_env(args.redis_url, prefix, extra, clean=True), logs)
        try:
            wait_until(lambda: _healthy(hub.port), 30.0, hub, "the hub's /healthz")
            result = asyncio.run(measure(args, hub.port, keys.key, hub.pid, prefix))
        except ServiceError as exc:
            print(exc, file=sys.stderr)
            return 1
        finally:
            hub.stop()
            delete_prefix(args.redis_url, prefix)
            shutil.rmtree(logs, ignore_errors=True)
    print(json.dumps(result))
    print(
        f"{result['ticks_per_s']:,} ticks/s accepted and published ({result['requests_per_s']} requests/s of "
        f"{args.batch}, p50 {result['p50_request_ms']} ms); hub {result['hub_cpu_us_per_tick']} us/tick "
        f"({result['hub_cpu_share']:.0%} of a core), Redis {result['redis_cpu_us_per_tick']} us/tick; "
        f"stored {result['stored_total']:,} of {result['accepted_total']:,} accepted; "
        f"errors {result['errors'] or 'none'}"
    )
    return 0


def _healthy(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/healthz", timeout=2) as r:
            return int(r.status) == 200
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
