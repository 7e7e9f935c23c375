"""`python -m loadtest.fanout`: the fan-out benchmark of the marketstream hub.

For each run it starts the hub (``marketstream.serve``, N uvicorn workers) and the feed
(``manage.py runfeed --generated``) under a prefix of its own, on Redis at 127.0.0.1:6379
or on a private redis-server (``--redis``), or uses running ones (``--url ... --no-start``);
connects the scenario's clients from several asyncio client processes (loadtest.clients);
warms up; measures a window; then stops the feed and checks that every client ends on the
final snapshot. With ``--baseline`` the same scenario runs again on the seed tutorial's
pattern (core layer, seed consumer) and the result gives the ratio of hub CPU per
delivered tick, baseline / ours. Prints one JSON line, then a table (stdout); progress
goes to stderr. Everything it started is stopped on exit, error, Ctrl-C or timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadtest import clients
from loadtest.catalog import choose, fetch_catalog, healthy, http_base, is_loopback, last_seqs, stream_url
from loadtest.report import Raw, cpu_ratio, plot, summarize, table
from loadtest.scenarios import Scenario, from_args, parser
from loadtest.services import (
    LOOPBACK,
    REDIS_HINT,
    ProcessMeter,
    Service,
    ServiceError,
    delete_prefix,
    free_port,
    hub_env,
    redis_ping,
    start_feed,
    start_hub,
    start_redis,
    wait_until,
)


def say(text: str) -> None:
    print(f"fanout: {text}", file=sys.stderr, flush=True)


class ClientPool:
    """The client processes of one run, and the command/reply exchange with them."""

    def __init__(self, specs: list[list[str]], options: clients.ClientOptions, procs: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[Any] = []
        for i in range(min(procs, len(specs))):
            parent, child = ctx.Pipe()
            process = ctx.Process(target=clients.run, args=(child, specs[i::procs], options), daemon=True)
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)

    def replies(self, timeout: float) -> list[Any]:
        """One reply from every process, within `timeout` seconds overall."""
        deadline = time.monotonic() + timeout
        out = []
        for pipe, process in zip(self.pipes, self.processes, strict=True):
            while not pipe.poll(0.2):
                if not process.is_alive():
                    raise RuntimeError(f"client process {process.pid} exited with {process.exitcode}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"client process {process.pid} did not answer within {timeout:.0f} s")
            out.append(pipe.recv()[1])
        return out

    def command(self, command: str, arg: Any = None, timeout: float = 30.0) -> list[Any]:
        for pipe in self.pipes:
            pipe.send((command, arg))
        return self.replies(timeout)

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop", None))
        deadline = time.monotonic() + 5.0
        for process in self.processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join(2.0)
            if process.is_alive():
                process.kill()
        for pipe in self.pipes:
            pipe.close()


def wait_workers(hub: Service, workers: int) -> None:
    """With several workers, wait until uvicorn's supervisor has them all, then a moment."""
    if workers > 1:
        import psutil

        wait_until(lambda: len(psutil.Process(hub.pid).children()) >= workers, 30.0, hub, "the hub's workers")
        time.sleep(1.5)


def run_one(scenario: Scenario, variant: str, redis_url: str | None, args: argparse.Namespace, logs: Path) -> Raw:
    """One run of `scenario` on our hub ("ours") or the seed pattern ("baseline")."""
    baseline = variant == "baseline"
    encoding = "json" if baseline else scenario.encoding
    raw = Raw(variant=variant, encoding=encoding)
    prefix = f"bench-{os.getpid()}-{time.time_ns() // 1_000_000 % 10**9}-{variant}"
    services: list[Service] = []
    pool: ClientPool | None = None
    feed: Service | None = None
    try:
        if args.no_start:
            base = http_base(args.url)
            meter = ProcessMeter(args.hub_pid) if args.hub_pid else None
            feed_meter = None
        else:
            assert redis_url is not None
            port = free_port()
            env = hub_env(redis_url, prefix, scenario.flush_ms, baseline, args.baseline_layer if baseline else None)
            say(f"{variant}: hub on {LOOPBACK}:{port} ({scenario.workers} worker(s)), feed {scenario.rate:g} ticks/s")
            hub = start_hub(port, scenario.workers, env, logs, baseline)
            services.append(hub)
            base = f"http://{LOOPBACK}:{port}"
            wait_until(lambda: healthy(base), 30.0, hub, "the hub's /healthz")
            wait_workers(hub, scenario.workers)
            feed = start_feed(scenario.symbols, scenario.rate, env, logs)
            services.append(feed)
            wait_until(lambda: len(fetch_catalog(base)) >= scenario.symbols, 30.0, feed, "the feed's symbols")
            meter, feed_meter = ProcessMeter(hub.pid), ProcessMeter(feed.pid)
        symbols = sorted(fetch_catalog(base))[: scenario.symbols]
        rng = random.Random(scenario.seed)
        specs = [choose(symbols, scenario.symbols_per_client, rng) for _ in range(scenario.clients)]
        url = urlsplit(stream_url(base if not args.no_start else args.url))
        options = clients.ClientOptions(
            host=url.hostname or LOOPBACK,
            port=url.port or 80,
            path=url.path,
            encoding=encoding,
            throttle_ms=scenario.throttle,
            tolerance_ms=scenario.throttle_tolerance_ms,
            key=args.key,
        )
        raw.rss_before = meter.rss_bytes() if meter else None
        say(f"{variant}: connecting {scenario.clients} clients from {scenario.client_procs} process(es)")
        started = time.monotonic()
        pool = ClientPool(specs, options, scenario.client_procs)
        ready = pool.replies(60.0 + scenario.clients / 50)
        raw.connect_seconds = time.monotonic() - started
        raw.connected = sum(r["connected"] for r in ready)
        raw.connect_failed = sum(r["failed"] for r in ready)
        raw.subscribe_retries = sum(r["retries"] for r in ready)
        raw.first_error = next((r["first_error"] for r in ready if r["first_error"]), "")
        for r in ready:
            for symbol, n in r["subscriptions"].items():
                raw.subscriptions[symbol] = raw.subscriptions.get(symbol, 0) + n
        say(
            f"{variant}: {raw.connected} connected in {raw.connect_seconds:.1f} s ({raw.connect_failed} failed, "
            f"{raw.subscribe_retries} subscribe retries)"
        )
        if raw.connected == 0:
            raise RuntimeError(f"no client could connect and subscribe: {raw.first_error}")
        raw.rss_connected = meter.rss_bytes() if meter else None
        time.sleep(scenario.warmup)
        say(f"{variant}: measuring {scenario.duration:g} s")
        cpu0 = meter.cpu_seconds() if meter else None
        feed_cpu0 = feed_meter.cpu_seconds() if feed_meter else None
        seq0 = last_seqs(fetch_catalog(base))
        pool.command("reset")
        t0 = time.monotonic()
        profiler = start_profiler(args, meter, scenario, variant, logs)
        time.sleep(scenario.duration)
        raw.reports = pool.command("report")
        raw.window_s = time.monotonic() - t0
        seq1 = last_seqs(fetch_catalog(base))
        if meter is not None and cpu0 is not None:
            raw.hub_cpu_s = meter.cpu_seconds() - cpu0
            raw.rss_after = meter.rss_bytes()
        if feed_meter is not None and feed_cpu0 is not None:
            raw.feed_cpu_s = feed_meter.cpu_seconds() - feed_cpu0
        raw.published = {s: seq1.get(s, 0) - seq0.get(s, 0) for s in symbols}
        if profiler is not None:
            profiler.wait(30)
            raw.notes.append(f"py-spy profile of the hub in the window: {args.profile}; its sampling costs some CPU")
        if feed is not None:
            feed.stop(10.0, signal.SIGINT)
            time.sleep(1.0 + 2 * scenario.throttle / 1000)
            final = last_seqs(fetch_catalog(base))
            checks = pool.command("final", final)
            raw.final_checked = sum(c["checked"] for c in checks)
            raw.final_stale = sum(c["stale"] for c in checks)
        else:
            raw.notes.append("ends-on-latest not checked: the feed was not started by the benchmark")
        return raw
    finally:
        if pool is not None:
            pool.close()
        for service in reversed(services):
            service.stop()
        if redis_url is not None and not args.no_start:
            with contextlib.suppress(Exception):
                delete_prefix(redis_url, prefix)


def start_profiler(
    args: argparse.Namespace, meter: ProcessMeter | None, scenario: Scenario, variant: str, logs: Path
) -> subprocess.Popen[bytes] | None:
    """py-spy recording the hub during the window (``--profile``, ours only)."""
    if not args.profile or variant != "ours" or meter is None:
        return None
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(binary):
        say("py-spy is not installed (pip install py-spy); no profile")
        return None
    argv = [binary, "record", "-o", args.profile, "--pid", str(meter.processes[0].pid)]
    argv += ["--duration", str(int(scenario.duration)), "--subprocesses", "--nonblocking"]
    if not args.profile.endswith(".svg"):
        argv += ["--format", "raw"]  # collapsed stacks, one line each: for scripts
    return subprocess.Popen(argv, stdout=open(logs / "py-spy.log", "wb"), stderr=subprocess.STDOUT)


@contextlib.contextmanager
def redis_for(args: argparse.Namespace, logs: Path) -> Iterator[str | None]:
    """The Redis URL the runs use, starting a private redis-server when asked or needed."""
    if args.no_start:
        yield None
        return
    if args.redis not in ("auto", "private"):
        if not is_loopback(args.redis):
            raise SystemExit(f"--redis must be on a loopback address, got {args.redis}")
        yield args.redis
        return
    if args.redis == "auto" and redis_ping(6379):
        yield f"redis://{LOOPBACK}:6379/0"
        return
    if args.redis == "auto":
        say(f"no Redis on {LOOPBACK}:6379 (start one with: {REDIS_HINT}); starting a private one")
    port = free_port()
    service = start_redis(port, logs)
    try:
        yield f"redis://{LOOPBACK}:{port}/0"
    finally:
        service.stop()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _timeout(signum: int, frame: Any) -> None:
    raise TimeoutError("the benchmark ran past --max-seconds")


def run(args: argparse.Namespace, scenario: Scenario) -> dict[str, Any]:
    """All runs of this invocation; returns the output document."""
    variants = ["baseline"] if args.baseline_only else ["ours", *(["baseline"] if args.baseline else [])]
    rates = [float(r) for r in args.sweep.split(",")] if args.sweep else [scenario.rate]
    logs = Path(tempfile.mkdtemp(prefix="fanout-"))
    points: list[dict[str, Any]] = []
    try:
        with redis_for(args, logs) as redis_url:
            for rate in rates:
                current = dataclasses.replace(scenario, rate=rate)
                point: dict[str, Any] = {"scenario": scenario.name, "describe": current.describe()}
                for variant in variants:
                    point[variant] = summarize(current, run_one(current, variant, redis_url, args, logs))
                if "ours" in point and "baseline" in point:
                    point["cpu_ratio_baseline_over_ours"] = cpu_ratio(point["ours"], point["baseline"])
                points.append(point)
    except BaseException:
        say(f"logs of the services: {logs}")
        raise
    shutil.rmtree(logs, ignore_errors=True)
    document: dict[str, Any] = points[0] if len(points) == 1 else {"scenario": scenario.name, "sweep": points}
    if args.plot:
        flat = [p[v] for p in points for v in variants]
        problem = plot(args.plot, flat)
        document["plot"] = problem or args.plot
        say(problem or f"plot written to {args.plot}")
    return document


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        scenario = from_args(args)
    except ValueError as exc:
        p.error(str(exc))
    if args.no_start and not args.url:
        p.error("--no-start needs --url ws://127.0.0.1:PORT")
    if args.url and not is_loopback(args.url):
        p.error(f"only loopback addresses: --url {args.url}")
    if (args.baseline or args.baseline_only) and args.no_start:
        p.error("--baseline starts its own hub: not with --no-start")
    limit = clients.raise_nofile()
    if limit < scenario.clients // scenario.client_procs + 1024:
        say(f"RLIMIT_NOFILE is {limit}: too low for {scenario.clients} connections")
    runs = len(args.sweep.split(",")) if args.sweep else 1
    runs *= 1 + int(bool(args.baseline))
    budget = args.max_seconds or runs * (scenario.warmup + scenario.duration + 90 + scenario.clients / 50)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(max(1, int(budget)))
    try:
        document = run(args, scenario)
    except (KeyboardInterrupt, TimeoutError, ServiceError, RuntimeError) as exc:
        say(f"stopped: {type(exc).__name__}: {exc}")
        return 2
    finally:
        signal.alarm(0)
    print(json.dumps(document), flush=True)
    for point in document.get("sweep", [document]):
        results = [point[v] for v in ("ours", "baseline") if v in point]
        title = f"\n{point['scenario']}: {point['describe']}"
        if point.get("cpu_ratio_baseline_over_ours"):
            title += f"  (hub CPU per tick, baseline / ours: {point['cpu_ratio_baseline_over_ours']}x)"
        print(table(title, results))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(document, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
