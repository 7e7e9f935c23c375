"""`manage.py createkey --name NAME ...`: create an API key; stdout gets the key and nothing else."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from consumers.models import ApiKey

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `12h`, `30d` -> timedelta; ValueError naming what was expected."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if not match or int(match[1]) == 0:
        raise ValueError(f"duration {text!r}: expected a positive number and a unit s, m, h or d (like 30d)")
    return timedelta(**{UNITS[match[2]]: int(match[1])})


class Command(BaseCommand):
    help = "Create an API key. Prints the new key, and nothing else, on stdout: it is not stored and shown only once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="unique name of the key")
        parser.add_argument("--symbols", default="*", help="entitlement: 'AAPL,MSFT,FX:*' or '*' (default: *)")
        parser.add_argument("--max-subscriptions", type=int, help="default: the global setting")
        parser.add_argument("--min-throttle-ms", type=int, help="default: the global setting")
        parser.add_argument("--max-requests-per-s", type=int, help="default: the global setting")
        parser.add_argument("--max-connections", type=int, help="across all hubs; default: the global setting")
        parser.add_argument("--expires", help="lifetime: 90s, 15m, 12h, 30d (default: never)")
        parser.add_argument("--owner", default="", help="who the key is for")
        parser.add_argument("--origins", default="", help="allowed browser origins, comma-separated")
        parser.add_argument("--publish", action="store_true", help="the key may publish ticks")

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"].strip()
        if not name:
            raise CommandError("--name: expected a non-empty name")
        if ApiKey.objects.filter(name=name).exists():
            raise CommandError(f"a key named {name!r} exists already (revokekey disables it; pick another name)")
        fields: dict[str, Any] = {
            "symbols": options["symbols"],
            "owner": options["owner"],
            "allowed_origins": options["origins"],
            "publish": options["publish"],
        }
        for limit in ("max_subscriptions", "min_throttle_ms", "max_requests_per_s", "max_connections"):
            value = options[limit]
            if value is not None:
                least = 0 if limit == "min_throttle_ms" else 1
                if value < least:
                    raise CommandError(f"--{limit.replace('_', '-')}: expected an integer >= {least}, got {value}")
                fields[limit] = value
        if options["expires"]:
            try:
                fields["expires"] = timezone.now() + parse_duration(options["expires"])
            except ValueError as exc:
                raise CommandError(f"--expires: {exc}") from exc
        try:
            instance, key = ApiKey.create(name, **fields)
        except ValidationError as exc:
            problems = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
            raise CommandError(f"key not created: {problems}") from exc
        self.stderr.write(f"created key {instance.name!r} ({instance.prefix}...); it is shown only this once")
        self.stdout.write(key)
