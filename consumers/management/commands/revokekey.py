"""`manage.py revokekey NAME`: disable a key (it stays listed; the admin can enable it again).

Every hub hears of it (over Redis, or at its next reload) and closes the key's
connections with 4003."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from consumers.models import ApiKey
from consumers.signals import announce


class Command(BaseCommand):
    help = "Revoke (disable) the API key named NAME: it is refused from the next handshake on."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="the key's name (listkeys shows them)")

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"]
        if not ApiKey.objects.filter(name=name).update(disabled=True):
            raise CommandError(f"no key named {name!r} (listkeys shows the keys)")
        announce(f"key {name} revoked")  # its connections on every hub close with 4003
        self.stderr.write(f"revoked key {name!r}")
