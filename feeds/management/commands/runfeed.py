"""`python manage.py runfeed`: a simulated feed publishing through Redis.

python manage.py runfeed --symbols AAPL,MSFT --rate 1000
python manage.py runfeed --generated 200 --rate 5000 --seed 7
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from feeds.publisher import Publisher
from feeds.runner import run_feed
from feeds.simulated import SimulatedFeed
from feeds.universe import DEFAULT_UNIVERSE, by_symbols, generated
from marketstream.adapters import redis_store
from marketstream.adapters.transport import transport_for
from marketstream.core.symbols import normalize

log = logging.getLogger("feeds")


class Command(BaseCommand):
    help = "Run a simulated feed: a random walk per symbol, published to the hubs through Redis."

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

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REDIS_URL:
            raise CommandError(
                "runfeed publishes through Redis: set REDIS_URL (the embedded default runs its feed inside the server)"
            )
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
        sent = asyncio.run(self._run(feed, options))
        self.stdout.write(f"runfeed: published {sent} ticks")

    async def _run(self, feed: SimulatedFeed, options: dict[str, Any]) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # this command's own layer, store and transport (the server builds its own in its lifespan)
        config = settings.MARKETSTREAM
        store = redis_store.RedisStore(
            redis_store.connect(settings.REDIS_URL), config["PREFIX"], config["HISTORY_MAXLEN"], config["BARS_KEEP"]
        )
        publisher = Publisher(store, transport_for(get_channel_layer(), store))
        log.info("runfeed: %d symbols at %.0f ticks/s", len(feed.instruments), options["rate"])
        self.stdout.write(f"runfeed: {len(feed.instruments)} symbols at {options['rate']:.0f} ticks/s", ending="\n")
        self.stdout.flush()
        return await run_feed(
            feed,
            publisher,
            options["rate"],
            stop,
            options["duration"],
            options["ticks"],
            not options["no_opening"],
            bars=config["BARS_KEEP"] > 0,
        )
