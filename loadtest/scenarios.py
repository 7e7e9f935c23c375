"""The fan-out benchmark's scenarios: named presets, and the command line that picks and
overrides them (`python -m loadtest.fanout --help`)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    """One benchmark run's parameters. Rates are ticks per second over all symbols."""

    name: str
    clients: int  # connections
    symbols_per_client: int
    symbols: int  # generated symbols in the feed (SYM0000...)
    rate: float
    throttle: int = 0  # throttle_ms of every subscription
    warmup: float = 5.0  # seconds after the last connection subscribed, before measuring
    duration: float = 20.0  # seconds measured
    workers: int = 1  # hub processes (uvicorn workers)
    encoding: str = "msgpack"
    flush_ms: float = 0.0  # MARKETSTREAM_FLUSH_MS of the hub
    client_procs: int = 2  # load-generator processes
    throttle_tolerance_ms: float = 20.0
    seed: int = 1  # for the symbols drawn by each client

    def describe(self) -> str:
        text = f"{self.clients} clients x {self.symbols_per_client} of {self.symbols} symbols, {self.rate:g} ticks/s"
        if self.throttle:
            text += f", throttle {self.throttle} ms"
        return text


PRESETS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("dashboard", clients=200, symbols_per_client=10, symbols=100, rate=500, client_procs=1),
        # 30 ms of flush delay: 14 ticks a frame instead of 10, 20% less hub CPU, lower p99 (docs/performance.md)
        Scenario("fanout", clients=1000, symbols_per_client=20, symbols=200, rate=2000, duration=30, flush_ms=30),
        Scenario("throttled", clients=1000, symbols_per_client=50, symbols=200, rate=5000, throttle=250, duration=30),
        # mostly idle: 10 ticks/s over 200 symbols is a tick every 4 s per connection
        Scenario("connections", clients=10_000, symbols_per_client=5, symbols=200, rate=10, warmup=5, duration=15),
        Scenario(
            "tiny", clients=20, symbols_per_client=5, symbols=20, rate=200, warmup=1.5, duration=3, client_procs=1
        ),
    )
}

OVERRIDES = {
    # option: (field, type, help)
    "--clients": ("clients", int, "connections"),
    "--symbols-per-client": ("symbols_per_client", int, "symbols each connection subscribes to"),
    "--symbols": ("symbols", int, "symbols in the feed"),
    "--rate": ("rate", float, "ticks per second offered by the feed, over all symbols"),
    "--throttle": ("throttle", int, "throttle_ms of every subscription"),
    "--warmup": ("warmup", float, "seconds of traffic before measuring"),
    "--duration": ("duration", float, "seconds measured"),
    "--workers": ("workers", int, "hub worker processes (uvicorn --workers)"),
    "--encoding": ("encoding", str, "msgpack or json"),
    "--flush-ms": ("flush_ms", float, "MARKETSTREAM_FLUSH_MS for the hub"),
    "--client-procs": ("client_procs", int, "load-generator processes"),
    "--throttle-tolerance-ms": ("throttle_tolerance_ms", float, "jitter allowed before a throttle violation"),
    "--seed": ("seed", int, "random seed of the symbols each client draws"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.fanout",
        description="Fan-out benchmark of the marketstream hub: many connections from several asyncio "
        "client processes; starts Redis, the hub and the feed unless told to use running ones.",
    )
    p.add_argument("--scenario", choices=sorted(PRESETS), default="dashboard", help="named preset (default dashboard)")
    for option, (name, kind, text) in OVERRIDES.items():
        p.add_argument(option, dest=name, type=kind, default=None, help=f"{text} (overrides the preset)")
    p.add_argument("--baseline", action="store_true", help="also run the seed pattern and report the CPU ratio")
    p.add_argument("--baseline-only", action="store_true", help="run only the seed pattern")
    p.add_argument(
        "--baseline-layer", choices=("core", "pubsub"), default="core", help="channel layer of the seed pattern"
    )
    p.add_argument("--url", help="a running hub (ws://127.0.0.1:PORT[/ws/v1/stream]); with --no-start")
    p.add_argument("--no-start", action="store_true", help="start nothing: use the hub at --url and its feed")
    p.add_argument("--hub-pid", type=int, help="with --no-start: the hub's pid, to measure its CPU and RSS")
    p.add_argument("--redis", default="auto", help="auto (127.0.0.1:6379 if it answers, else private), private, "
                   "or a redis:// URL on a loopback address")  # fmt: skip
    p.add_argument("--key", default="", help="API key, sent as 'Authorization: Bearer KEY'")
    p.add_argument("--sweep", help="comma-separated rates: one run per rate (for --plot)")
    p.add_argument("--plot", metavar="FILE.png", help="plot latency and delivered rate against load (matplotlib)")
    p.add_argument("--json-out", metavar="FILE", help="write the JSON result to FILE")
    p.add_argument("--max-seconds", type=float, help="hard limit for the whole invocation (default: from the runs)")
    p.add_argument(
        "--profile",
        metavar="FILE.svg",
        help="record the hub with py-spy during the window (ours only); .svg: flame graph, else collapsed stacks",
    )
    return p


def from_args(args: argparse.Namespace) -> Scenario:
    """The preset named by ``--scenario`` with the overrides given on the command line.

    Raises ValueError naming the option when a value is out of range.
    """
    scenario = PRESETS[args.scenario]
    changes = {name: getattr(args, name) for name, _, _ in OVERRIDES.values() if getattr(args, name) is not None}
    scenario = dataclasses.replace(scenario, **changes)
    checks = [
        (scenario.clients > 0, "--clients must be > 0"),
        (scenario.symbols > 0, "--symbols must be > 0"),
        (0 < scenario.symbols_per_client <= scenario.symbols, "--symbols-per-client must be in 1..--symbols"),
        (scenario.rate > 0, "--rate must be > 0"),
        (scenario.throttle >= 0, "--throttle must be >= 0"),
        (scenario.duration > 0 and scenario.warmup >= 0, "--duration must be > 0 and --warmup >= 0"),
        (scenario.workers > 0 and scenario.client_procs > 0, "--workers and --client-procs must be > 0"),
        (scenario.encoding in ("msgpack", "json"), "--encoding must be msgpack or json"),
    ]
    for ok, text in checks:
        if not ok:
            raise ValueError(text)
    return scenario
