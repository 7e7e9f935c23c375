"""`manage.py listkeys`: the keys as a table; never a key or its hash."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand

from consumers.models import ApiKey, split_list

COLUMNS = ("name", "prefix", "owner", "symbols", "limits", "expires", "disabled", "last used")


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


def limits_text(key: ApiKey) -> str:
    """The key's own limits (`subs=10 min_throttle_ms=100 req/s=5 conns=3 publish`), `defaults` when none."""
    own = (
        ("subs", key.max_subscriptions),
        ("min_throttle_ms", key.min_throttle_ms),
        ("req/s", key.max_requests_per_s),
        ("conns", key.max_connections),
    )
    parts = [f"{label}={value}" for label, value in own if value is not None]
    if key.publish:
        parts.append("publish")
    return " ".join(parts) or "defaults"


def row(key: ApiKey) -> tuple[str, ...]:
    symbols = ",".join(split_list(key.symbols))
    disabled = "yes" if key.disabled else "no"
    return (key.name, key.prefix, key.owner or "-", symbols, limits_text(key), when(key.expires), disabled)


class Command(BaseCommand):
    help = "List the API keys: name, prefix, owner, symbols, limits, expiry, disabled, last use (never the key)."

    def handle(self, *args: Any, **options: Any) -> None:
        rows = [COLUMNS] + [(*row(key), when(key.last_used)) for key in ApiKey.objects.order_by("name")]
        widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
        for r in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip())
