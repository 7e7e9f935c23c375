"""The fan-out benchmark's scenarios: named presets, and the command line that picks and
overrides them (`python -m loadtest.fanout --help`).

The `recovery` preset is a reconnect storm: after the warm-up and `Restart.after` seconds
of the window, the hub gets SIGTERM (it closes every client with 1012) and a new hub
process starts on the same port while the feed keeps publishing; every client reconnects
with exponential backoff and full jitter and resubscribes with `since` (its last seq and
epoch per symbol). The window then runs until `duration` seconds after the last client
is live again.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Restart:
    """The hub restart of a reconnect storm, and how its clients reconnect."""

    after: float = 3.0  # seconds of the measured window before the hub gets SIGTERM
    backoff_ms: float = 100.0  # reconnect delay: uniform(0, min(backoff_max_ms, backoff_ms * 2**attempt))
    backoff_max_ms: float = 2000.0
    timeout: float = 60.0  # seconds the benchmark waits, after the restart, for every client to be live


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
    restart: Restart | None = None  # a reconnect storm (the recovery scenario); None: no restart
    bars: tuple[str, ...] = ()  # bar intervals every subscription also asks for (--bars)

    def describe(self) -> str:
        text = f"{self.clients} clients x {self.symbols_per_client} of {self.symbols} symbols, {self.rate:g} ticks/s"
        if self.throttle:
            text += f", throttle {self.throttle} ms"
        if self.bars:
            text += f", bars {','.join(self.bars)}"
        if self.restart:
            text += (
                f", hub restarted after {self.restart.after:g} s, backoff {self.restart.backoff_ms:g}"
                f"-{self.restart.backoff_max_ms:g} ms, measured until {self.duration:g} s after all live"
            )
        return text


BASELINES = ("seed", "bare", "both")  # --baseline: which baselines run after ours
AUTH_MODES = ("anonymous", "key")  # --auth: how the clients of our hub are admitted

PRESETS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("dashboard", clients=200, symbols_per_client=10, symbols=100, rate=500, client_procs=1),
        # 55 ms of flush delay, staggered per connection: the hub CPU per tick of the earlier 30 ms
        # in one round, with p99 30% lower (docs/performance.md)
        Scenario("fanout", clients=1000, symbols_per_client=20, symbols=200, rate=2000, duration=30, flush_ms=55),
        Scenario("throttled", clients=1000, symbols_per_client=50, symbols=200, rate=5000, throttle=250, duration=30),
        # mostly idle: 10 ticks/s over 200 symbols is a tick every 4 s per connection
        Scenario("connections", clients=10_000, symbols_per_client=5, symbols=200, rate=10, warmup=5, duration=15),
        Scenario(
            "tiny", clients=20, symbols_per_client=5, symbols=20, rate=200, warmup=1.5, duration=3, client_procs=1
        ),
        # the fanout sizes (and its flush delay), with the hub restarted in the window: a reconnect storm
        Scenario(
            "recovery",
            clients=1000,
            symbols_per_client=20,
            symbols=200,
            rate=2000,
            duration=5,
            flush_ms=55,
            restart=Restart(),
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

RESTART_OVERRIDES = {
    # option: (field of Restart, type, help); only for scenarios with a restart (recovery)
    "--restart-after": ("after", float, "seconds of the window before the hub is restarted"),
    "--backoff-ms": ("backoff_ms", float, "first reconnect delay bound, doubled per attempt (full jitter)"),
    "--backoff-max-ms": ("backoff_max_ms", float, "largest reconnect delay bound"),
    "--live-timeout": ("timeout", float, "seconds to wait after the restart for every client to be live"),
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
    for option, (name, kind, text) in RESTART_OVERRIDES.items():
        p.add_argument(option, dest=f"restart_{name}", type=kind, default=None, help=f"{text} (recovery)")
    p.add_argument(
        "--bars",
        nargs="?",
        const="1s,1m",
        default=None,
        metavar="INTERVALS",
        help="every subscription also asks for bars of these intervals (default when given: 1s,1m)",
    )
    p.add_argument(
        "--baseline",
        nargs="?",
        const="seed",
        choices=BASELINES,
        default=None,
        help="also run a baseline and report the CPU ratios: seed (the seed pattern; the default when given "
        "alone), bare (a bare websockets broadcast server, loadtest/bare.py) or both",
    )
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
    p.add_argument(
        "--auth",
        choices=AUTH_MODES,
        default="anonymous",
        help="anonymous (default): our hub admits clients without a credential; key: our hub runs with "
        "anonymous access off and a key database (loadtest.keys), every client connects with that key "
        "(the baseline ignores it)",
    )
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
    given = {o: n for o, (n, _, _) in RESTART_OVERRIDES.items() if getattr(args, f"restart_{n}", None) is not None}
    restart = {name: getattr(args, f"restart_{name}") for name in given.values()}
    if given and scenario.restart is None:
        raise ValueError(f"{', '.join(given)}: only for a scenario with a restart (--scenario recovery)")
    if scenario.restart is not None:
        changes["restart"] = dataclasses.replace(scenario.restart, **restart)
    if getattr(args, "bars", None):
        changes["bars"] = tuple(i.strip() for i in args.bars.split(",") if i.strip())
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
        (set(scenario.bars) <= {"1s", "5s", "1m", "5m", "1h"}, "--bars: intervals are 1s, 5s, 1m, 5m, 1h"),
    ]
    if scenario.restart is not None:
        r = scenario.restart
        checks += [
            (r.after >= 0, "--restart-after must be >= 0"),
            (0 < r.backoff_ms <= r.backoff_max_ms, "--backoff-ms must be > 0 and <= --backoff-max-ms"),
            (r.timeout > 0, "--live-timeout must be > 0"),
        ]
    for ok, text in checks:
        if not ok:
            raise ValueError(text)
    return scenario
