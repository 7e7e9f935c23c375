"""ApiKey: only a hash is stored, compared in constant time; validity, entitlement, limits.

Runs on the database of the environment: SQLite by default, PostgreSQL under
tests/keys/test_postgresql.py (which runs this module with DATABASE_URL).
"""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from consumers.models import ApiKey
from marketstream.core.limits import Limits

pytestmark = pytest.mark.django_db


def test_runs_on_the_database_of_the_environment() -> None:
    expected = "postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    assert connection.vendor == expected


def test_only_the_hash_of_a_key_is_stored() -> None:
    instance, key = ApiKey.create("desk")
    assert key.startswith("ms_") and len(key) == 3 + 43  # 32 bytes, URL-safe base64 without padding
    stored = ApiKey.objects.get(name="desk")
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest() == ApiKey.hash(key)
    assert stored.prefix == key[: len(stored.prefix)] and len(stored.prefix) < 16
    row = ApiKey.objects.filter(pk=instance.pk).values().get()
    assert not any(key in str(value) for value in row.values()), "the key itself must never be stored"
    assert ApiKey.objects.get(key_hash=ApiKey.hash(key)).pk == instance.pk


def test_keys_are_random() -> None:
    keys = {ApiKey.create(f"k{i}")[1] for i in range(5)}
    assert len(keys) == 5


def test_matches_compares_in_constant_time() -> None:
    instance, key = ApiKey.create("desk")
    with mock.patch("consumers.models.hmac.compare_digest", wraps=__import__("hmac").compare_digest) as compare:
        assert instance.matches(key)
        assert not instance.matches(key[:-1] + ("A" if key[-1] != "A" else "B"))
        assert not instance.matches("")
    assert compare.call_count == 3


def test_usable_means_not_disabled_and_not_expired() -> None:
    now = timezone.now()
    instance, _ = ApiKey.create("desk", expires=now + timedelta(hours=1))
    assert instance.usable(now)
    assert not instance.usable(now + timedelta(hours=1))
    assert not instance.usable(now + timedelta(days=2))
    instance.expires = None
    assert instance.usable(now + timedelta(days=3650))
    instance.disabled = True
    assert not instance.usable(now)


def test_the_entitlement_is_compiled_from_the_patterns() -> None:
    instance, _ = ApiKey.create("desk", symbols="AAPL, msft\nFX:*\n\n BTC/*")
    entitlement = ApiKey.objects.get(pk=instance.pk).entitlement()
    assert entitlement.patterns == ("AAPL", "MSFT", "FX:*", "BTC/*")
    assert [entitlement.allows(s) for s in ("AAPL", "MSFT", "FX:EURUSD", "BTC/USD", "GOOG")] == [True] * 4 + [False]
    everything, _ = ApiKey.create("all")
    assert everything.symbols == "*" and everything.entitlement().allows("ANYTHING")


@pytest.mark.parametrize("symbols", ["A**", "*A", "FX:*X*", "no spaces allowed"])
def test_a_bad_pattern_is_refused_on_save_with_a_clear_error(symbols: str) -> None:
    with pytest.raises(ValidationError) as info:
        ApiKey.create("bad", symbols=symbols)
    assert "expected SYMBOL, PREFIX* or *" in " ".join(info.value.message_dict["symbols"])
    assert not ApiKey.objects.filter(name="bad").exists()


def test_a_duplicate_name_is_refused() -> None:
    ApiKey.create("desk")
    with pytest.raises(ValidationError) as info:
        ApiKey.create("desk")
    assert "name" in info.value.message_dict


def test_limits_are_the_key_s_own_over_the_defaults() -> None:
    defaults = Limits(max_subscriptions=1000, min_throttle_ms=0, max_requests_per_s=50, max_recovery=7)
    plain, _ = ApiKey.create("plain")
    assert plain.limits(defaults) == defaults
    own, _ = ApiKey.create("own", max_subscriptions=10, min_throttle_ms=250, max_requests_per_s=5, max_connections=2)
    limits = own.limits(defaults)
    assert (limits.max_subscriptions, limits.min_throttle_ms, limits.max_requests_per_s) == (10, 250, 5)
    assert limits.max_recovery == 7 and limits.max_throttle_ms == defaults.max_throttle_ms
    own.min_throttle_ms = defaults.max_throttle_ms + 1
    with pytest.raises(ValueError, match="throttle"):
        own.limits(defaults)


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        ApiKey.create("zero", max_subscriptions=0, max_connections=0)
    assert {"max_subscriptions", "max_connections"} <= set(info.value.message_dict)


def test_origins_are_one_per_line_or_comma_separated() -> None:
    instance, _ = ApiKey.create("web", allowed_origins="https://a.example\nhttps://b.example, https://c.example")
    assert instance.origins() == ["https://a.example", "https://b.example", "https://c.example"]


def test_recording_a_use_touches_only_last_used() -> None:
    instance, _ = ApiKey.create("desk")
    now = timezone.now()
    ApiKey.objects.filter(pk=instance.pk).update(last_used=now)
    assert ApiKey.objects.get(pk=instance.pk).last_used == now
