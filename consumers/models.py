"""API keys: who may connect, what they may see (entitlement) and their limits.

A key is `ms_` followed by 32 random bytes in URL-safe base64. Only its SHA-256 is
stored (a fast hash is enough for 256 random bits, and a handshake must cost
microseconds, not a password hash's milliseconds); the key itself is shown once, when it
is created. Look a key up by its hash (`ApiKey.objects.get(key_hash=ApiKey.hash(key))`);
`matches` compares in constant time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from marketstream.core.entitlements import Entitlement
from marketstream.core.limits import Limits

KEY_PREFIX = "ms_"
KEY_BYTES = 32
PREFIX_CHARS = len(KEY_PREFIX) + 8  # what is stored and shown of a key: enough to tell keys apart

# per-key limit fields that override the same-named field of core.limits.Limits
LIMIT_FIELDS = ("max_subscriptions", "min_throttle_ms", "max_requests_per_s")


def split_list(text: str) -> list[str]:
    """Items of a text field that holds one per line or comma-separated; blanks dropped."""
    return [item.strip() for item in re.split(r"[,\n]", text) if item.strip()]


class Grantable(models.Model):
    """What a credential grants: an entitlement, limits over the global defaults, publishing.

    Shared by API keys and by users who connect with a Django session (`UserGrant`).
    """

    symbols = models.TextField(
        default="*", help_text="entitlement: symbols (AAPL), prefixes (FX:*) or *, one per line or comma-separated"
    )
    max_subscriptions = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="empty: the global default"
    )
    min_throttle_ms = models.PositiveIntegerField(null=True, blank=True, help_text="empty: the global default")
    max_requests_per_s = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="empty: the global default"
    )
    max_connections = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="across all hubs; empty: the global default"
    )
    publish = models.BooleanField(default=False, help_text="may publish ticks (HTTP ingest)")

    class Meta:
        abstract = True

    def entitlement(self) -> Entitlement:
        """The compiled entitlement; ValueError for a bad pattern (save() refuses those)."""
        return Entitlement(split_list(self.symbols))

    def limits(self, defaults: Limits) -> Limits:
        """`defaults` with this grant's own values where it has them.

        ValueError when they contradict the defaults (a min throttle above the max).
        """
        own = {name: getattr(self, name) for name in LIMIT_FIELDS if getattr(self, name) is not None}
        return dataclasses.replace(defaults, **own)

    def clean(self) -> None:
        try:
            self.entitlement()
        except ValueError as exc:
            raise ValidationError({"symbols": str(exc)}) from exc


class ApiKey(Grantable):
    name = models.CharField(max_length=100, unique=True)
    key_hash = models.CharField(max_length=64, unique=True, editable=False, help_text="SHA-256 of the key, hex")
    prefix = models.CharField(max_length=16, editable=False, help_text="the key's first characters, to recognize it")
    owner = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField(null=True, blank=True, help_text="empty: never")
    disabled = models.BooleanField(default=False, help_text="a disabled (revoked) key is refused")
    last_used = models.DateTimeField(null=True, blank=True, editable=False)
    allowed_origins = models.TextField(
        blank=True, help_text="browser origins allowed with this key, one per line or comma-separated"
    )

    class Meta:
        ordering = ("name",)
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}...)"

    @staticmethod
    def hash(key: str) -> str:
        """SHA-256 of `key`, hex: what is stored instead of the key."""
        return hashlib.sha256(key.encode()).hexdigest()

    @staticmethod
    def generate() -> str:
        """A new random key: `ms_` and 32 random bytes, URL-safe base64 (43 characters)."""
        return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)

    def set_key(self, key: str) -> None:
        """Store `key`'s hash and display prefix (not the key)."""
        self.key_hash = self.hash(key)
        self.prefix = key[:PREFIX_CHARS]

    @classmethod
    def create(cls, name: str, **fields: Any) -> tuple[ApiKey, str]:
        """Create, validate and save a key; returns it and the key, which is not stored anywhere.

        Raises ValidationError naming what is wrong (a duplicate name, a bad pattern, ...).
        """
        key = cls.generate()
        instance = cls(name=name, **fields)
        instance.set_key(key)
        instance.save()
        return instance, key

    def matches(self, key: str) -> bool:
        """Whether `key` is this key, compared in constant time."""
        return hmac.compare_digest(self.key_hash, self.hash(key))

    def usable(self, now: datetime) -> bool:
        """Not disabled and not expired at `now` (an aware datetime)."""
        return not self.disabled and (self.expires is None or now < self.expires)

    def origins(self) -> list[str]:
        """The allowed browser origins of this key."""
        return split_list(self.allowed_origins)

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Validates the fields first (a bad pattern, a duplicate name): ValidationError says which.

        A save with `update_fields` is not validated again; to record a use, prefer
        `ApiKey.objects.filter(pk=...).update(last_used=now)` (one query, no validation).
        """
        if not self.key_hash:
            raise ValidationError("a key needs its hash: use ApiKey.create() or set_key()")
        if kwargs.get("update_fields") is None:
            self.full_clean()
        super().save(*args, **kwargs)


class UserGrant(Grantable):
    """What a Django user who connects with a logged-in session may see, and their limits.

    A user without one is refused, except an active superuser, who is granted every
    symbol with the global limits. An inactive user is refused.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="grant")

    class Meta:
        verbose_name = "session grant"

    def __str__(self) -> str:
        return f"grant of {self.user}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Validates the entitlement first: ValidationError says what is wrong."""
        if kwargs.get("update_fields") is None:
            self.full_clean()
        super().save(*args, **kwargs)
