"""The admin lists and edits keys, shows a new key once, and is off unless MARKETSTREAM_ADMIN is set."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from consumers.models import ApiKey
from marketstream.urls import patterns

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.keys.admin_urls")]
KEY = re.compile(r"ms_[A-Za-z0-9_-]{43}")


def test_the_admin_lists_keys_without_secrets(admin_client: Client) -> None:
    _, key = ApiKey.create("desk", owner="trading desk")
    ApiKey.create("feeder", disabled=True)
    page = admin_client.get("/admin/consumers/apikey/").content.decode()
    assert "desk" in page and "feeder" in page and "trading desk" in page and key[:11] in page
    assert key not in page and ApiKey.hash(key) not in page


def test_the_hash_is_shown_read_only(admin_client: Client) -> None:
    instance, key = ApiKey.create("desk")
    page = admin_client.get(f"/admin/consumers/apikey/{instance.pk}/change/").content.decode()
    assert ApiKey.hash(key) in page and 'name="key_hash"' not in page and 'name="symbols"' in page


def test_a_key_created_in_the_admin_is_shown_once(admin_client: Client) -> None:
    form = {"name": "web", "owner": "", "symbols": "AAPL\nFX:*", "allowed_origins": "https://app.example"}
    response = admin_client.post("/admin/consumers/apikey/add/", form, follow=True)
    assert response.status_code == 200
    (key,) = KEY.findall(response.content.decode())
    instance = ApiKey.objects.get(name="web")
    assert instance.matches(key) and instance.entitlement().patterns == ("AAPL", "FX:*")
    again = admin_client.get(f"/admin/consumers/apikey/{instance.pk}/change/").content.decode()
    assert key not in again and not KEY.search(again)


def test_the_admin_refuses_a_bad_pattern(admin_client: Client) -> None:
    response = admin_client.post("/admin/consumers/apikey/add/", {"name": "bad", "symbols": "A**"})
    assert response.status_code == 200 and "expected SYMBOL, PREFIX* or *" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_the_admin_needs_a_staff_login(client: Client) -> None:
    response = client.get("/admin/consumers/apikey/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_admin_s_static_files_are_served(client: Client) -> None:
    assert client.get("/static/admin/css/base.css").status_code == 200


def test_without_the_setting_there_is_no_admin() -> None:
    assert not any("admin" in str(route.pattern) for route in patterns(False))
    assert any("admin" in str(route.pattern) for route in patterns(True))
    assert any("static" in str(route.pattern) for route in patterns(False)), "the dashboard's files are served anyway"
