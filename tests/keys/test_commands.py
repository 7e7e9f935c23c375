"""createkey, listkeys, revokekey: stdout of createkey is the key alone; no secret is ever listed.

Runs on SQLite by default and on PostgreSQL under tests/keys/test_postgresql.py.
"""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from consumers.management.commands.createkey import parse_duration
from consumers.models import ApiKey

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_createkey_prints_the_key_and_nothing_else() -> None:
    out, err = run("createkey", "--name", "desk")
    key = out.removesuffix("\n")
    assert "\n" not in key and key.startswith("ms_") and len(key) == 46
    assert ApiKey.objects.get(name="desk").matches(key)
    assert "desk" in err and key not in err


def test_createkey_takes_the_entitlement_limits_expiry_and_owner() -> None:
    before = timezone.now()
    out, _ = run(
        "createkey", "--name", "desk", "--symbols", "AAPL,MSFT,FX:*", "--max-subscriptions", "10",
        "--min-throttle-ms", "100", "--max-requests-per-s", "5", "--max-connections", "3",
        "--expires", "30d", "--owner", "trading", "--publish",
    )  # fmt: skip
    key = ApiKey.objects.get(key_hash=ApiKey.hash(out.strip()))
    assert key.entitlement().patterns == ("AAPL", "MSFT", "FX:*")
    assert (key.max_subscriptions, key.min_throttle_ms, key.max_requests_per_s, key.max_connections) == (10, 100, 5, 3)
    assert key.owner == "trading" and key.publish and not key.disabled
    assert key.expires is not None
    assert before + timedelta(days=30) <= key.expires <= timezone.now() + timedelta(days=30)


def test_createkey_defaults_to_everything_and_the_global_limits() -> None:
    run("createkey", "--name", "plain")
    key = ApiKey.objects.get(name="plain")
    assert key.symbols == "*" and key.expires is None and not key.publish
    assert (key.max_subscriptions, key.min_throttle_ms, key.max_requests_per_s, key.max_connections) == (None,) * 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--symbols", "AAPL,A**"], "expected SYMBOL, PREFIX* or *"),
        (["--expires", "3w"], "expected a positive number and a unit s, m, h or d"),
        (["--expires", "0d"], "expected a positive number"),
        (["--max-subscriptions", "0"], "--max-subscriptions: expected an integer >= 1"),
        (["--min-throttle-ms", "-1"], "--min-throttle-ms: expected an integer >= 0"),
    ],
)
def test_createkey_refuses_bad_input_with_a_clear_message(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("*", r"\*")):
        run("createkey", "--name", "bad", *args)
    assert not ApiKey.objects.exists()


def test_createkey_refuses_a_duplicate_name() -> None:
    run("createkey", "--name", "desk")
    with pytest.raises(CommandError, match="'desk' exists already"):
        run("createkey", "--name", "desk")
    assert ApiKey.objects.count() == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("12h", timedelta(hours=12)),
        ("30d", timedelta(days=30)),
    ],
)
def test_durations_take_s_m_h_d(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_listkeys_shows_the_keys_and_never_a_secret() -> None:
    desk_key = run("createkey", "--name", "desk", "--symbols", "AAPL,FX:*", "--max-subscriptions", "10")[0].strip()
    feed_key = run("createkey", "--name", "feeder", "--owner", "ops", "--publish", "--expires", "1h")[0].strip()
    run("revokekey", "feeder")
    out, _ = run("listkeys")
    header, desk, feeder = out.splitlines()
    assert header.split()[:5] == ["name", "prefix", "owner", "symbols", "limits"]
    assert desk.split()[:5] == ["desk", desk_key[:11], "-", "AAPL,FX:*", "subs=10"] and " no " in desk
    assert feeder.split()[:3] == ["feeder", feed_key[:11], "ops"] and "publish" in feeder and " yes " in feeder
    for key in (desk_key, feed_key):
        assert key not in out and ApiKey.hash(key) not in out
        assert key[:20] not in out  # no more of a key than its display prefix


def test_listkeys_with_no_keys_prints_the_header() -> None:
    out, _ = run("listkeys")
    assert out.split() == ["name", "prefix", "owner", "symbols", "limits", "expires", "disabled", "last", "used"]


def test_revokekey_disables_the_key() -> None:
    key = run("createkey", "--name", "desk")[0].strip()
    _, err = run("revokekey", "desk")
    assert "desk" in err
    instance = ApiKey.objects.get(name="desk")
    assert instance.disabled and not instance.usable(timezone.now()) and instance.matches(key)


def test_revokekey_of_an_unknown_name_is_an_error() -> None:
    with pytest.raises(CommandError, match="no key named 'nobody'"):
        run("revokekey", "nobody")
