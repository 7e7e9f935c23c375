"""`python manage.py reshard --from OLD_URLS --to NEW_URLS`: change the shard count.

Stop every feed and hub first; run this; start them again with REDIS_URL=NEW_URLS
(docs/shards.md). Each symbol whose shard changes moves with its seq, epoch, snapshot,
history, bars, description and catalog entry, so clients recover across the move.
"""

from __future__ import annotations

from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from marketstream.adapters.reshard import ReshardError, reshard


class Command(BaseCommand):
    help = "Move symbols between shards after a change of the shard count (stop feeds and hubs first)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="old", required=True, help="the old REDIS_URL (comma-separated, in order)")
        parser.add_argument("--to", dest="new", required=True, help="the new REDIS_URL (comma-separated, in order)")
        parser.add_argument("--prefix", default=None, help="the key prefix (default: MARKETSTREAM_PREFIX, else 'ms')")
        parser.add_argument(
            "--quiet-seconds",
            type=float,
            default=1.0,
            help="how long no seq may change on the old shards before the move starts (a feed still publishing)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        prefix = options["prefix"] or settings.MARKETSTREAM["PREFIX"]
        try:
            report = reshard(
                options["old"],
                options["new"],
                prefix,
                options["quiet_seconds"],
                progress=lambda line: self.stdout.write(line),
            )
        except (ReshardError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        except redis.RedisError as exc:
            raise CommandError(f"a shard failed during the move ({exc}); run the same command again") from None
        for symbol in report.stray:
            self.stderr.write(f"left alone: {symbol} has state on a shard that is not its own under --from")
        self.stdout.write(
            f"reshard: {len(report.moved)} symbols moved, {report.kept} stayed; "
            f"start feeds and hubs with REDIS_URL={options['new']}"
        )
