"""The hub's HTTP side as load tests use it: the catalog, health, and the stream URL.

Blocking `urllib` calls: cooperative under locust's gevent (sockets are monkey-patched),
and called outside the event loop by the fan-out benchmark.
"""

from __future__ import annotations

import ipaddress
import json
import random
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

STREAM_PATH = "/ws/v1/stream"
LOOPBACK_NAMES = ("localhost",)


class CatalogError(RuntimeError):
    """The catalog could not be read, or had not the expected shape."""


def http_base(url: str) -> str:
    """``http://host:port`` for a base URL given as http(s):// or ws(s)://, with or without a path."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https"):
        raise ValueError(f"expected an http(s):// or ws(s):// URL, got {url!r}")
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def stream_url(url: str) -> str:
    """The stream endpoint (``ws://host:port/ws/v1/stream``) of a hub given by any base URL.

    A ws(s):// URL with a path other than ``/`` is kept as given.
    """
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme in ("ws", "wss") and parts.path not in ("", "/"):
        return url
    base = urlsplit(http_base(url))
    return urlunsplit(({"http": "ws", "https": "wss"}[base.scheme], base.netloc, STREAM_PATH, "", ""))


def is_loopback(url: str) -> bool:
    """True when the URL's host is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET a URL and decode its JSON body. Returns (status, body); HTTP errors with a
    JSON body are returned too; anything else raises CatalogError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            raise CatalogError(f"GET {url}: HTTP {exc.code}") from exc
    except (OSError, ValueError) as exc:
        raise CatalogError(f"GET {url}: {type(exc).__name__}: {exc}") from exc


def fetch_catalog(base: str, timeout: float = 5.0) -> dict[str, dict[str, Any] | None]:
    """The hub's catalog: symbol -> its last tick (None before its first), from GET /api/v1/symbols."""
    url = http_base(base) + "/api/v1/symbols"
    status, body = get_json(url, timeout)
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("symbols"), list):
        raise CatalogError(f"GET {url}: expected 200 with {{'symbols': [...]}}, got {status}: {str(body)[:200]}")
    return {entry["symbol"]: entry.get("last") for entry in body["symbols"]}


def last_seqs(catalog: dict[str, dict[str, Any] | None]) -> dict[str, int]:
    """symbol -> seq of its last tick (0 before its first)."""
    return {symbol: (tick or {}).get("seq", 0) for symbol, tick in catalog.items()}


def healthy(base: str, timeout: float = 2.0) -> bool:
    """True when GET /healthz answers 200."""
    try:
        status, _ = get_json(http_base(base) + "/healthz", timeout)
    except CatalogError:
        return False
    return status == 200


def choose(symbols: Sequence[str], k: int, rng: random.Random) -> list[str]:
    """`k` distinct symbols drawn at random from `symbols` (all of them when k >= len)."""
    if k >= len(symbols):
        return list(symbols)
    return rng.sample(list(symbols), k)
