"""`python manage.py runfeed`: a feed source publishing through Redis.

python manage.py runfeed --symbols AAPL,MSFT --rate 1000          # the simulated walk
python manage.py runfeed --generated 200 --rate 5000 --seed 7
python manage.py runfeed --replay ticks.ndjson --speed 10 --loop   # recorded ticks (CSV or NDJSON)
python manage.py runfeed --replay sample                          # the sample file shipped in feeds/samples/
python manage.py runfeed --metrics-port 9101                      # and its /metrics (docs/operations.md)
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import uvloop
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from feeds.publisher import Publisher
from feeds.replay import SAMPLE, ReplayError, ReplaySource
from feeds.runner import SimulatedSource, Source, run_source
from feeds.simulated import SimulatedFeed
from feeds.universe import DEFAULT_UNIVERSE, by_symbols, generated
from marketstream.adapters import metrics_http
from marketstream.adapters.feed_metrics import FeedMetrics
from marketstream.adapters.layer import ShardedPubSubChannelLayer
from marketstream.adapters.redis_store import RedisStore
from marketstream.adapters.sharded_transport import open_shards
from marketstream.adapters.shards import ShardCountMismatch, connect
from marketstream.adapters.transport import transport_for
from marketstream.core.symbols import normalize

log = logging.getLogger("feeds")


class Command(BaseCommand):
    help = "Run a feed: a simulated random walk per symbol, or a replay of recorded ticks, published through Redis."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--symbols", help="comma-separated symbols (default: the demo universe)")
        parser.add_argument("--generated", type=int, metavar="N", help="N generated symbols SYM0000...")
        parser.add_argument("--prefix", default="SYM", help="name prefix of generated symbols")
        parser.add_argument("--rate", type=float, default=100.0, help="ticks per second over all symbols")
        parser.add_argument("--seed", type=int, help="random seed, for a reproducible walk")
        parser.add_argument("--duration", type=float, help="stop after this many seconds")
        parser.add_argument("--ticks", type=int, help="stop after this many ticks (not counting the opening)")
        parser.add_argument(
            "--no-opening", action="store_true", help="do not start with one tick per symbol (the opening quotes)"
        )
        parser.add_argument(
            "--replay",
            metavar="FILE",
            help="replay recorded ticks from FILE (.csv, .ndjson, .jsonl, optionally .gz; "
            "'sample': the file shipped with marketstream) instead of the simulated walk",
        )
        parser.add_argument("--speed", type=float, default=1.0, help="replay speed factor (default 1; 0: at once)")
        parser.add_argument("--loop", action="store_true", help="replay the file again and again")
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=settings.MARKETSTREAM["FEED_METRICS_PORT"],
            help="serve the feed's GET /metrics on this port, on MARKETSTREAM_METRICS_HOST "
            "(default: MARKETSTREAM_FEED_METRICS_PORT; 0: none)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REDIS_URL:
            raise CommandError(
                "runfeed publishes through Redis: set REDIS_URL (the embedded default runs its feed inside the server)"
            )
        if options["replay"]:
            source: Source = self._replay(options)
        else:
            source = self._simulated(options)
        sent = uvloop.run(self._run(source, options))  # the loop the server runs on: less CPU and latency per batch
        self.stdout.write(f"runfeed: published {sent} ticks")

    def _replay(self, options: dict[str, Any]) -> ReplaySource:
        if options["symbols"] or options["generated"] or options["seed"] is not None or options["ticks"] is not None:
            raise CommandError(
                "--replay takes its symbols and ticks from the file: no --symbols, --generated, --seed, --ticks"
            )
        if options["speed"] < 0:
            raise CommandError(f"--speed must be >= 0 (0: as fast as possible), got {options['speed']}")
        path = SAMPLE if options["replay"] == "sample" else options["replay"]
        source = ReplaySource(path, options["speed"], options["loop"])
        try:
            source.symbols()  # reads and checks the whole file before anything is published
        except ReplayError as exc:
            raise CommandError(str(exc)) from None
        return source

    def _simulated(self, options: dict[str, Any]) -> SimulatedSource:
        if options["symbols"] and options["generated"]:
            raise CommandError("give --symbols or --generated, not both")
        if options["rate"] <= 0:
            raise CommandError(f"--rate must be > 0 ticks/s, got {options['rate']}")
        if options["symbols"]:
            names = [s for s in options["symbols"].split(",") if s.strip()]
            symbols = [normalize(s.strip()) for s in names]
            bad = [n for n, s in zip(names, symbols, strict=True) if s is None]
            if bad:
                raise CommandError(f"not valid symbols (1-32 of A-Z 0-9 . - / : _): {', '.join(bad)}")
            instruments = by_symbols([s for s in symbols if s])
        elif options["generated"]:
            if options["generated"] <= 0:
                raise CommandError("--generated must be > 0")
            instruments = generated(options["generated"], options["prefix"].upper())
        else:
            instruments = DEFAULT_UNIVERSE
        feed = SimulatedFeed(instruments, seed=options["seed"])
        return SimulatedSource(feed, options["rate"], options["duration"], options["ticks"], not options["no_opening"])

    async def _run(self, source: Source, options: dict[str, Any]) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if options["duration"] is not None and isinstance(source, ReplaySource):
            loop.call_later(options["duration"], stop.set)
        # this command's own layer, store and transport (the server builds its own in its lifespan)
        config = settings.MARKETSTREAM
        layer = get_channel_layer()
        monitor = None
        if isinstance(layer, ShardedPubSubChannelLayer):
            shards = open_shards(
                layer,
                settings.REDIS_SHARDS,
                config["PREFIX"],
                config["HISTORY_MAXLEN"],
                config["BARS_KEEP"],
                "feed",
                timeout=config["SHARD_TIMEOUT_S"],
            )
            monitor = shards.monitor
            try:
                await monitor.start()
            except ShardCountMismatch as exc:
                raise CommandError(str(exc)) from None
            publisher = Publisher(shards.store, shards.transport)
        else:  # another layer (the seed baseline's, loadtest.seed): one Redis, the layer's own transport
            client = connect(settings.REDIS_SHARDS[0])
            store = RedisStore(client, config["PREFIX"], config["HISTORY_MAXLEN"], config["BARS_KEEP"])
            publisher = Publisher(store, transport_for(layer, store))
        symbols = source.symbols()
        if isinstance(source, ReplaySource):
            what = f"replay of {source.path} ({len(symbols)} symbols) at speed {source.speed:g}"
            what += ", looping" if source.loop else ""
        else:
            what = f"{len(symbols)} symbols at {options['rate']:.0f} ticks/s"
        log.info("runfeed: %s", what)
        self.stdout.write(f"runfeed: {what}", ending="\n")
        self.stdout.flush()
        listener = None
        if options["metrics_port"]:
            metrics = FeedMetrics(publisher.stats, monitor.health if monitor is not None else None)
            host, port = config["METRICS_HOST"], options["metrics_port"]
            listener = await metrics_http.serve(metrics.render, host, port)
            log.info("runfeed: metrics on http://%s:%d/metrics", host, port)
        try:
            sent = await run_source(source, publisher, stop, bars=config["BARS_KEEP"] > 0)
        finally:
            if listener is not None:
                listener.close()
            if monitor is not None:
                await monitor.stop()
        return source.sent if isinstance(source, SimulatedSource) else sent  # the simulated walk's: after its opening
