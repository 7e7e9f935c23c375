"""`python -m loadtest.feedlatency`: the feed's share of a tick's latency, up to Redis delivery.

What it measures: from the `ts` the feed stamps on a tick (wall clock, when the tick is
made) to the moment a Redis subscriber on the same machine has the tick, which is where a
hub's receive starts. That span is everything the feed does per batch (encoding, the
publish.lua call, Redis's work in it) plus the wake-ups in between: the feed's, Redis's
and the subscriber's.

Per run: a fresh prefix `feedlat-<8 hex>`; a raw subscriber in this process's loop (uvloop;
one TCP connection, `PSUBSCRIBE <prefix>__group__tick.*`, replies parsed by hiredis), the
arrival time of a read (`time.time_ns()` once per `data_received`) being that of every
message in it; then the feed as the fan-out benchmark starts it (`manage.py runfeed
--generated N --rate R --duration D`, loadtest.services). Ticks of the first `--warmup`
seconds after the first tick are discarded; those of the next `--seconds` are measured,
with the feed's CPU (/proc/<pid>/stat) per tick received and Redis's `EVALSHA` time per
call (`INFO commandstats`: server-wide, so another client's scripts on the same Redis count
too). Messages that are not a tick in publish.lua's format are counted as `other`. The feed
is then stopped (SIGINT) and the prefix's keys deleted.

    python -m loadtest.feedlatency [--rate 500] [--symbols 100] [--seconds 10] [--warmup 2]
        [--runs 1] [--redis-url redis://127.0.0.1:6379/0] [--json-out FILE]

Prints one JSON line `{"runs": [...]}`, then a table of the runs. Exits 1 when Redis does not
answer or no tick arrived. A benchmark, not a timed test: its tests check only that what it
reports is there and plausible.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TypedDict
from urllib.parse import unquote, urlsplit

import hiredis
import msgpack
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from loadtest.services import REDIS_HINT, Service, service_env, start_feed
from marketstream.adapters.direct_script import pack_command

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
FIRST_TICK_TIMEOUT = 30.0  # seconds from starting the feed to its first tick (Django's start included)
SUBSCRIBE_TIMEOUT = 5.0  # seconds for Redis to confirm the PSUBSCRIBE
STOP_TIMEOUT = 5.0  # seconds the feed has to exit after SIGINT, before SIGKILL


class Latency(TypedDict):
    p50: float
    p90: float
    p99: float
    max: float


class RunResult(TypedDict):
    rate: float
    symbols: int
    seconds: float
    ticks: int
    latency_ms: Latency
    feed_cpu_us_per_tick: float | None
    evalsha_us_per_call: float | None
    other: int


class NoTicks(RuntimeError):
    """No tick reached the subscriber (the message includes the feed's log tail)."""


class RedisUnreachable(RuntimeError):
    """Redis does not answer at the URL given."""


def fresh_prefix() -> str:
    """A Redis key and channel prefix of one run."""
    return f"feedlat-{secrets.token_hex(4)}"


def tick_ts(payload: object) -> int | None:
    """The `ts` of the tick in a channel-layer message of publish.lua (msgpack map whose "m"
    is the msgpack tick), or None when `payload` is not one."""
    if not isinstance(payload, bytes):
        return None
    try:
        message = msgpack.unpackb(payload)
        packed = message["m"]
        if not isinstance(packed, bytes):
            return None
        ts = msgpack.unpackb(packed)["ts"]
    except (ValueError, TypeError, KeyError):
        return None
    return ts if type(ts) is int else None


class TickSubscriber(asyncio.Protocol):
    """A raw pattern subscriber: the latency (arrival ns - ts) of each tick while `recording`."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.reader = hiredis.Reader()
        self.subscribed: asyncio.Future[None] = loop.create_future()
        self.first_tick = asyncio.Event()
        self.closed = asyncio.Event()
        self.recording = False
        self.latencies: list[int] = []  # ns
        self.other = 0  # messages after the subscription that are not a tick

    def data_received(self, data: bytes) -> None:
        arrival = time.time_ns()  # one read: every message in it arrived now
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            self._reply(reply, arrival)

    def _reply(self, reply: object, arrival: int) -> None:
        if isinstance(reply, list) and len(reply) == 4 and reply[0] == b"pmessage":
            ts = tick_ts(reply[3])
            if ts is None:
                self.other += 1
                return
            self.first_tick.set()
            if self.recording:
                self.latencies.append(arrival - ts)
        elif not self.subscribed.done():
            if isinstance(reply, hiredis.ReplyError):
                self.subscribed.set_exception(ConnectionError(f"Redis refused the subscription: {reply}"))
            elif isinstance(reply, list) and reply[:1] == [b"psubscribe"]:
                self.subscribed.set_result(None)
            # anything else before the confirmation: AUTH's +OK
        else:
            self.other += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError(f"Redis closed the subscriber's connection ({exc})"))


def percentiles(latencies_ns: list[int]) -> Latency:
    """p50, p90, p99 (nearest rank) and max of `latencies_ns` (not empty), in ms to 3 decimals."""
    ordered = sorted(latencies_ns)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] / 1e6, 3)

    return Latency(p50=rank(50), p90=rank(90), p99=rank(99), max=round(ordered[-1] / 1e6, 3))


def cpu_clock_ticks(pid: int) -> int | None:
    """utime + stime of process `pid` in clock ticks, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 (state) on
    return int(fields[11]) + int(fields[12])  # fields 14 and 15


async def evalsha_stats(client: aioredis.Redis) -> tuple[int, int]:
    """Redis's (calls, usec) of EVALSHA so far."""
    entry = (await client.info("commandstats")).get("cmdstat_evalsha") or {}
    return int(entry.get("calls", 0)), int(entry.get("usec", 0))


async def delete_keys(client: aioredis.Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
    for i in range(0, len(keys), 500):
        await client.delete(*keys[i : i + 500])


async def wait_first_tick(subscriber: TickSubscriber, feed: Service) -> None:
    """Until the first tick arrives; NoTicks when the feed exits or FIRST_TICK_TIMEOUT passes first."""
    deadline = time.monotonic() + FIRST_TICK_TIMEOUT
    while not subscriber.first_tick.is_set():
        if not feed.running():
            raise NoTicks(
                f"no tick arrived: the feed exited with {feed.returncode} before its first tick:\n{feed.log_tail()}"
            )
        if subscriber.closed.is_set():
            raise NoTicks("no tick arrived: Redis closed the subscriber's connection before the first tick")
        if time.monotonic() > deadline:
            raise NoTicks(f"no tick arrived within {FIRST_TICK_TIMEOUT:.0f} s of starting the feed:\n{feed.log_tail()}")
        try:
            await asyncio.wait_for(subscriber.first_tick.wait(), 0.2)
        except TimeoutError:
            pass


async def measure(
    args: argparse.Namespace, client: aioredis.Redis, subscriber: TickSubscriber, prefix: str
) -> RunResult:
    """Start the feed, discard the warm-up, measure the window, stop the feed."""
    env = service_env(args.redis_url, prefix, {"LOG_LEVEL": "WARNING"})
    duration = str(args.warmup + args.seconds + 1)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as logs:
        feed = start_feed(args.symbols, args.rate, env, Path(logs), extra_args=("--duration", duration))
        try:
            await wait_first_tick(subscriber, feed)
            await asyncio.sleep(args.warmup)
            cpu_before = cpu_clock_ticks(feed.pid)
            subscriber.recording = True
            calls_before, usec_before = await evalsha_stats(client)
            await asyncio.sleep(args.seconds)
            subscriber.recording = False
            cpu_after = cpu_clock_ticks(feed.pid)
            calls_after, usec_after = await evalsha_stats(client)
        finally:
            feed.stop(STOP_TIMEOUT, signal.SIGINT)  # blocks the loop: nothing is measured any more
        ticks = len(subscriber.latencies)
        if ticks == 0:
            raise NoTicks(f"no tick arrived in the {args.seconds} s window:\n{feed.log_tail()}")
    cpu_us = None
    if cpu_before is not None and cpu_after is not None:
        cpu_us = round((cpu_after - cpu_before) / os.sysconf("SC_CLK_TCK") * 1e6 / ticks, 3)
    calls = calls_after - calls_before
    evalsha_us = round((usec_after - usec_before) / calls, 3) if calls > 0 else None
    return RunResult(
        rate=args.rate,
        symbols=args.symbols,
        seconds=args.seconds,
        ticks=ticks,
        latency_ms=percentiles(subscriber.latencies),
        feed_cpu_us_per_tick=cpu_us,
        evalsha_us_per_call=evalsha_us,
        other=subscriber.other,
    )


async def run_once(args: argparse.Namespace, client: aioredis.Redis) -> RunResult:
    """One run under a fresh prefix; its subscriber closed and its keys deleted afterwards."""
    prefix = fresh_prefix()
    url = urlsplit(args.redis_url)
    loop = asyncio.get_running_loop()
    transport, subscriber = await loop.create_connection(TickSubscriber, url.hostname or "127.0.0.1", url.port or 6379)
    try:
        if url.password:
            auth = (unquote(url.username), unquote(url.password)) if url.username else (unquote(url.password),)
            transport.write(pack_command("AUTH", *auth))
        transport.write(pack_command("PSUBSCRIBE", f"{prefix}__group__tick.*"))
        await asyncio.wait_for(subscriber.subscribed, SUBSCRIBE_TIMEOUT)
        return await measure(args, client, subscriber, prefix)
    finally:
        transport.close()
        await delete_keys(client, prefix)


async def main_async(args: argparse.Namespace) -> list[RunResult]:
    """`args.runs` runs, one after the other. Raises RedisUnreachable, or NoTicks."""
    client = aioredis.Redis.from_url(args.redis_url, socket_connect_timeout=2.0)
    try:
        try:
            await client.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RedisUnreachable(f"Redis is not answering at {args.redis_url} ({exc})") from exc
        return [await run_once(args, client) for _ in range(args.runs)]
    finally:
        await client.aclose()


def table(runs: list[RunResult]) -> str:
    """One readable row per run."""
    head = ("run", "rate", "symbols", "ticks", "p50 ms", "p90 ms", "p99 ms", "max ms", "feed us/tick", "evalsha us")
    rows: list[tuple[str, ...]] = [head]
    for i, r in enumerate(runs, 1):
        lat = r["latency_ms"]
        cells = (i, r["rate"], r["symbols"], r["ticks"], lat["p50"], lat["p90"], lat["p99"], lat["max"])
        extra = (r["feed_cpu_us_per_tick"], r["evalsha_us_per_call"])
        rows.append(tuple(f"{c:g}" if isinstance(c, float) else str(c) for c in (*cells, *extra)))
    widths = [max(len(row[k]) for row in rows) for k in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.feedlatency", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=500.0, help="ticks per second over all symbols (default 500)")
    p.add_argument("--symbols", type=int, default=100, help="generated symbols (default 100)")
    p.add_argument("--seconds", type=float, default=10.0, help="the measured window (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds discarded after the first tick (default 2)")
    p.add_argument("--runs", type=int, default=1, help="runs, each with a feed and prefix of its own (default 1)")
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON document to FILE")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.rate <= 0 or args.symbols < 1 or args.seconds <= 0 or args.warmup < 0 or args.runs < 1:
        p.error("expected --rate > 0, --symbols >= 1, --seconds > 0, --warmup >= 0, --runs >= 1")
    import uvloop

    try:
        runs = uvloop.run(main_async(args))
    except RedisUnreachable as exc:
        print(f"feedlatency: {exc}. Start it with:\n  {REDIS_HINT}", file=sys.stderr)
        return 1
    except NoTicks as exc:
        print(f"feedlatency: {exc}", file=sys.stderr)
        return 1
    document = json.dumps({"runs": runs})
    print(document)
    print(table(runs))
    if args.json_out:
        Path(args.json_out).write_text(document + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
