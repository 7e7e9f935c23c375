"""`python -m loadtest.fanout`: the fan-out benchmark of the marketstream hub.

For each run it starts the hub (``marketstream.serve``, N uvicorn workers) and the feed
(``manage.py runfeed --generated``) under a prefix of its own, on Redis at 127.0.0.1:6379
or on a private redis-server (``--redis``), or uses running ones (``--url ... --no-start``);
connects the scenario's clients from several asyncio client processes (loadtest.clients);
warms up; measures a window; then stops the feed and checks that every client ends on the
final snapshot. With ``--auth key`` our hub runs with anonymous access off and a key
database (loadtest.keys), and every client of it connects with that key: the same
measurements, with authentication on the handshake and per-key connection leases in the
path (the baseline ignores ``--auth``). With ``--baseline`` the same scenario runs again
on the seed tutorial's pattern (core layer, seed consumer) and the result gives the ratio
of hub CPU per delivered tick, baseline / ours. Prints one JSON line, then a table (stdout); progress
goes to stderr. Everything it started is stopped on exit, error, Ctrl-C or timeout.

A scenario with a restart (``--scenario recovery``) restarts the hub inside the window
(`storm`): SIGTERM, a new hub on the same port, and the clients reconnect with `since`;
the window ends `duration` seconds after every client is live again.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from loadtest import clients
from loadtest.catalog import (
    CatalogError,
    choose,
    fetch_catalog,
    healthy,
    http_base,
    is_loopback,
    last_seqs,
    stream_url,
)
from loadtest.keys import KeyDatabase, key_database
from loadtest.report import Raw, cpu_ratio, plot, summarize, table
from loadtest.scenarios import Scenario, from_args, parser
from loadtest.services import (
    LOOPBACK,
    REDIS_HINT,
    Hub,
    ProcessMeter,
    Service,
    ServiceError,
    collect_replies,
    delete_prefix,
    free_port,
    hub_env,
    redis_ping,
    start_bare,
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
        return collect_replies(self.pipes, self.processes, timeout)

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


def children_cpu() -> float:
    """User + system CPU seconds of this process's children that have been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def log_errors(service: Service, examples: int = 3) -> list[str]:
    """Notes on the ERROR lines of a service's log: how many, and the first distinct messages."""
    errors = [line for line in service.log().splitlines() if " ERROR " in line]
    if not errors:
        return []
    seen: list[str] = []
    for line in errors:
        message = line.split(" ERROR ", 1)[1]
        if message not in seen:
            seen.append(message)
    shown = "; ".join(seen[:examples])
    return [f"{service.name} log ({service.log_path.name}): {len(errors)} ERROR lines: {shown}"]


def listening(port: int) -> bool:
    """True when a TCP connection to LOOPBACK:`port` is accepted."""
    try:
        with socket.create_connection((LOOPBACK, port), 0.5):
            return True
    except OSError:
        return False


def catalog_as(base: str, key: str, timeout: float = 5.0) -> dict[str, dict[str, Any] | None]:
    """`fetch_catalog`, sending `key` as ``Authorization: Bearer`` when given (a hub with
    anonymous access off answers 401 without it)."""
    if not key:
        return fetch_catalog(base, timeout)
    url = http_base(base) + "/api/v1/symbols"
    request = Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except (OSError, ValueError) as exc:  # HTTPError is an OSError
        raise CatalogError(f"GET {url} with a key: {type(exc).__name__}: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("symbols"), list):
        raise CatalogError(f"GET {url}: expected {{'symbols': [...]}}, got {str(body)[:200]}")
    return {entry["symbol"]: entry.get("last") for entry in body["symbols"]}


def hub_metrics(base: str, timeout: float = 30.0) -> dict[str, float]:
    """The hub's own counters from GET /metrics (``marketstream_*``, without ``_total``; a
    labelled family also under its bare name, summed over its labels); {} if unreadable."""
    try:
        with urlopen(f"{base}/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("marketstream_") and not name.endswith("_created"):
            with contextlib.suppress(ValueError):
                bare, brace, labels = name.partition("{")
                bare = bare.removesuffix("_total")
                out[bare + brace + labels] = float(value)
                if brace:
                    out[bare] = out.get(bare, 0.0) + float(value)
    return out


@dataclasses.dataclass
class Restarted:
    """What `storm` leaves for the rest of the run: the new hub and its meter, and the old
    hub's CPU seconds from its start until it exited."""

    hub: Hub
    meter: ProcessMeter
    old_cpu_s: float


def storm(
    scenario: Scenario, pool: ClientPool, hub: Hub, env: dict[str, str], logs: Path, raw: Raw, services: list[Service]
) -> Restarted:
    """The reconnect storm inside the window: after `restart.after` s, SIGTERM the hub (it
    closes every client with 1012), start a new hub on its port (added to `services`),
    and wait until every client is live again (or `restart.timeout` s after the restart).
    Fills `raw.storm`."""
    restart = scenario.restart
    assert restart is not None
    time.sleep(restart.after)
    old_meter = ProcessMeter(hub.pid)
    old_cpu, reaped = old_meter.cpu_seconds(), children_cpu()
    say(f"ours: restarting the hub (SIGTERM to pid {hub.pid}, port {hub.port})")
    t_restart = time.monotonic()
    code = hub.stop(30.0, signal.SIGTERM)
    t_exit = time.monotonic()
    old_total = children_cpu() - reaped  # the old hub's CPU, its shutdown included (it has been waited for)
    new = start_hub(hub.port, scenario.workers, env, logs)
    services.append(new)
    t_started = time.monotonic()
    # ready: it listens (uvicorn binds after the lifespan startup); polled closely, as the
    # clients poll it too, and not over HTTP, which the storm can delay by seconds
    while not listening(new.port):
        if not new.running() or time.monotonic() - t_started > 30.0:  # raises, with the hub's log
            wait_until(lambda: listening(new.port), 0.0, new, f"the new hub to listen on port {new.port}")
        time.sleep(0.01)
    t_ready = time.monotonic()
    wait_workers(new, scenario.workers)
    meter = ProcessMeter(new.pid)
    cpu_ready = meter.cpu_seconds()
    say(f"ours: new hub pid {new.pid} ready {t_ready - t_restart:.2f} s after SIGTERM; clients reconnecting")
    samples: list[tuple[float, float]] = []  # (monotonic, new hub CPU s) at each poll
    while True:
        status = pool.command("storm", False)
        now = time.monotonic()
        samples.append((now, meter.cpu_seconds()))
        live = sum(s["live"] for s in status)
        if live >= raw.connected:
            break
        if now - t_restart > restart.timeout:
            raw.notes.append(
                f"{raw.connected - live} of {raw.connected} clients not live {restart.timeout:g} s after the restart"
            )
            break
        time.sleep(0.05)
    detail = pool.command("storm", True)
    lives = [t[2] for d in detail for t in d["times"] if t[2] is not None]
    t_live = max(lives) if lives else samples[-1][0]
    cpu_live = next((cpu for t, cpu in samples if t >= t_live), None)
    if cpu_live is None:  # the last ones went live after the last poll
        cpu_live = meter.cpu_seconds()
    metrics = hub_metrics(new.base)
    say(f"ours: {len(lives)} of {raw.connected} clients live {t_live - t_restart:.2f} s after SIGTERM")
    raw.storm = {
        "restart_at": t_restart,
        "old_hub_exit_code": code,
        "old_hub_stopped_s": t_exit - t_restart,
        "new_hub_started_s": t_started - t_restart,
        "new_hub_ready_s": t_ready - t_restart,
        "old_hub_shutdown_cpu_s": old_total - old_cpu if old_total >= old_cpu else None,
        "new_hub_startup_cpu_s": cpu_ready,
        "new_hub_cpu_to_all_live_s": cpu_live,
        "hub_metrics": metrics,
        "clients": detail,
    }
    return Restarted(new, meter, max(old_total, old_cpu))


def run_one(
    scenario: Scenario,
    variant: str,
    redis_url: str | None,
    args: argparse.Namespace,
    logs: Path,
    keys: KeyDatabase | None = None,
) -> Raw:
    """One run of `scenario` on our hub ("ours"), the seed pattern ("baseline") or the bare
    `websockets` broadcast server ("bare", loadtest/bare.py). With `keys` (``--auth key``),
    our hub reads that key database with anonymous access off and every client (and the
    catalog reads) use its key; the baselines ignore it."""
    baseline = variant == "baseline"
    bare = variant == "bare"
    keys = None if baseline or bare else keys
    key = keys.key if keys is not None else args.key

    def catalog(base: str, timeout: float = 5.0) -> dict[str, dict[str, Any] | None]:
        return catalog_as(base, key, timeout)

    encoding = "json" if baseline else scenario.encoding
    raw = Raw(variant=variant, encoding=encoding)
    prefix = f"bench-{os.getpid()}-{time.time_ns() // 1_000_000 % 10**9}-{variant}"
    services: list[Service] = []
    pool: ClientPool | None = None
    feed: Service | None = None
    hub: Hub | None = None
    env: dict[str, str] = {}
    try:
        if args.no_start:
            base = http_base(args.url)
            meter = ProcessMeter(args.hub_pid) if args.hub_pid else None
            feed_meter = None
        else:
            assert redis_url is not None
            port = free_port()
            env = hub_env(redis_url, prefix, scenario.flush_ms, baseline, args.baseline_layer if baseline else None)
            if keys is not None:
                env.update(keys.env)
            say(f"{variant}: hub on {LOOPBACK}:{port} ({scenario.workers} worker(s)), feed {scenario.rate:g} ticks/s")
            hub = start_bare(port, env, logs) if bare else start_hub(port, scenario.workers, env, logs, baseline)
            services.append(hub)
            base = f"http://{LOOPBACK}:{port}"
            wait_until(lambda: healthy(base), 30.0, hub, "the hub's /healthz")
            wait_workers(hub, scenario.workers)
            feed = start_feed(scenario.symbols, scenario.rate, env, logs)
            services.append(feed)
            wait_until(lambda: len(catalog(base)) >= scenario.symbols, 30.0, feed, "the feed's symbols")
            meter, feed_meter = ProcessMeter(hub.pid), ProcessMeter(feed.pid)
        symbols = sorted(catalog(base))[: scenario.symbols]
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
            key=key,
            bars=scenario.bars,
        )
        if scenario.restart is not None:
            r = scenario.restart
            options = dataclasses.replace(
                options, reconnect=True, backoff_s=r.backoff_ms / 1000, backoff_max_s=r.backoff_max_ms / 1000
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
        if keys is not None:
            raw.notes.append("auth key: anonymous access off, every client with the key of a fresh key database")
        if raw.connected == 0:
            raise RuntimeError(f"no client could connect and subscribe: {raw.first_error}")
        raw.rss_connected = meter.rss_bytes() if meter else None
        time.sleep(scenario.warmup)
        say(f"{variant}: measuring {scenario.duration:g} s")
        cpu0 = meter.cpu_seconds() if meter else None
        feed_cpu0 = feed_meter.cpu_seconds() if feed_meter else None
        seq0 = last_seqs(catalog(base))
        pool.command("reset")
        t0 = time.monotonic()
        profiler = start_profiler(args, meter, scenario, variant, logs)
        old_hub_cpu = 0.0  # CPU of the hub that was restarted, from its start until it exited
        if scenario.restart is not None and hub is not None:
            restarted = storm(scenario, pool, hub, env, logs, raw, services)
            meter, old_hub_cpu = restarted.meter, restarted.old_cpu_s
        time.sleep(scenario.duration)
        raw.reports = pool.command("report")
        raw.window_s = time.monotonic() - t0
        seq1 = last_seqs(catalog(base, 5.0 if scenario.restart is None else 60.0))
        if meter is not None and cpu0 is not None:
            raw.hub_cpu_s = meter.cpu_seconds() + old_hub_cpu - cpu0
            raw.rss_after = meter.rss_bytes()
        if feed_meter is not None and feed_cpu0 is not None:
            raw.feed_cpu_s = feed_meter.cpu_seconds() - feed_cpu0
        raw.published = {s: seq1.get(s, 0) - seq0.get(s, 0) for s in symbols}
        if profiler is not None:
            profiler.wait(30)
            raw.notes.append(f"py-spy profile of the hub in the window: {args.profile}; its sampling costs some CPU")
            if scenario.restart is not None:
                raw.notes.append("the profile covers the first hub only, until its restart")
        if raw.storm is not None:
            raw.storm["final"] = pool.command("storm", False)
            raw.storm["hub_metrics_end"] = hub_metrics(base)
            raw.notes.extend(log_errors(services[-1]))
        if feed is not None:
            feed.stop(10.0, signal.SIGINT)
            time.sleep(1.0 + 2 * scenario.throttle / 1000)
            final = last_seqs(catalog(base, 5.0 if scenario.restart is None else 60.0))
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


def baselines(option: str | None) -> list[str]:
    """The baseline variants of `--baseline`: "baseline" (the seed pattern) and/or "bare"."""
    return {None: [], "seed": ["baseline"], "bare": ["bare"], "both": ["baseline", "bare"]}[option]


def run(args: argparse.Namespace, scenario: Scenario) -> dict[str, Any]:
    """All runs of this invocation; returns the output document."""
    variants = ["baseline"] if args.baseline_only else ["ours", *baselines(args.baseline)]
    rates = [float(r) for r in args.sweep.split(",")] if args.sweep else [scenario.rate]
    logs = Path(tempfile.mkdtemp(prefix="fanout-"))
    points: list[dict[str, Any]] = []
    try:
        with redis_for(args, logs) as redis_url, contextlib.ExitStack() as stack:
            keys = None
            if args.auth == "key" and "ours" in variants:
                say("auth key: creating a key database")
                keys = stack.enter_context(key_database())
            for rate in rates:
                current = dataclasses.replace(scenario, rate=rate)
                point: dict[str, Any] = {"scenario": scenario.name, "describe": current.describe(), "auth": args.auth}
                for variant in variants:
                    point[variant] = summarize(current, run_one(current, variant, redis_url, args, logs, keys))
                if "ours" in point and "baseline" in point:
                    point["cpu_ratio_baseline_over_ours"] = cpu_ratio(point["ours"], point["baseline"])
                if "ours" in point and "bare" in point:
                    point["cpu_ratio_bare_over_ours"] = cpu_ratio(point["ours"], point["bare"])
                    point["cpu_ratio_ours_over_bare"] = cpu_ratio(point["bare"], point["ours"])
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
    if args.auth == "key" and args.no_start:
        p.error("--auth key starts hubs with a key database of their own: not with --no-start (use --key)")
    if scenario.restart is not None and (args.no_start or args.baseline or args.baseline_only):
        p.error(f"--scenario {scenario.name} restarts the hub it started: not with --no-start or --baseline")
    limit = clients.raise_nofile()
    if limit < scenario.clients // scenario.client_procs + 1024:
        say(f"RLIMIT_NOFILE is {limit}: too low for {scenario.clients} connections")
    runs = len(args.sweep.split(",")) if args.sweep else 1
    runs *= 1 + len(baselines(args.baseline))
    per_run = scenario.warmup + scenario.duration + 90 + scenario.clients / 50
    if scenario.restart is not None:  # the wait for the old hub to stop and the new one to start, and the storm
        per_run += scenario.restart.after + 60 + scenario.restart.timeout
    budget = args.max_seconds or runs * per_run
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
        results = [point[v] for v in ("ours", "baseline", "bare") if v in point]
        title = f"\n{point['scenario']}: {point['describe']}, auth {point.get('auth', 'anonymous')}"
        if point.get("cpu_ratio_baseline_over_ours"):
            title += f"  (hub CPU per tick, baseline / ours: {point['cpu_ratio_baseline_over_ours']}x)"
        if point.get("cpu_ratio_ours_over_bare"):
            title += f"  (hub CPU per tick, ours / bare websockets: {point['cpu_ratio_ours_over_bare']}x)"
        print(table(title, results))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(document, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
