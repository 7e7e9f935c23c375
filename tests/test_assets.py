"""Static files served by the hub (marketstream/assets.py): the dashboard's, the vendored
libraries and the admin's, with their types, revalidation, and nothing outside them."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("dashboard/main.js", "text/javascript"),
        ("dashboard/dashboard.css", "text/css"),
        ("vendor/lightweight-charts/lightweight-charts.standalone.production.mjs", "text/javascript"),
        ("vendor/msgpack/msgpack.min.js", "text/javascript"),
        ("admin/css/base.css", "text/css"),
    ],
)
def test_a_static_file_is_served_with_its_type(client: Client, path: str, content_type: str) -> None:
    response = client.get(f"/static/{path}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith(content_type)
    assert response["Cache-Control"] == "no-cache" and response["Last-Modified"]
    again = client.get(f"/static/{path}", headers={"If-Modified-Since": response["Last-Modified"]})
    assert again.status_code == 304, "an unchanged file is not sent again"


@pytest.mark.parametrize(
    "path",
    [
        "dashboard/nothing.js",
        "../settings.py",
        "dashboard/../../settings.py",
        "/etc/passwd",
        "",
        "dashboard",
        "%2e%2e/x",
    ],
)
def test_nothing_else_is_served(client: Client, path: str) -> None:
    assert client.get(f"/static/{path}").status_code == 404
