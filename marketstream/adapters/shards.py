"""Shards: one Redis of several, and the one rule that says which holds a symbol.

`REDIS_URL` is one URL or several, comma-separated; shard i is the i-th (0-based).
Everything about a symbol (its tick and bars group channels, seq, epoch, snapshot,
history, bars, description) lives on shard `shard_of(symbol, n)`, so publish.lua's
atomic step for a symbol stays on one server, and a hub subscribes where the feed
publishes. Connection leases and grant notices live on shard 0.

A shard is a plain Redis (``redis://``, ``rediss://``, ``unix://``) or a primary
managed by Redis Sentinel::

    redis+sentinel://[:PASSWORD@]SENTINEL_HOST:PORT/SERVICE_NAME[/DB][?sentinel=HOST2:PORT2&...]

(more sentinels with repeated ``sentinel=``, SERVICE_NAME by default ``mymaster``;
``socket_timeout`` and ``sentinel_password`` may be given as query parameters; a
PASSWORD is the primary's). Clients of a Sentinel-managed shard ask the sentinels
for the primary on every new connection, so they follow a failover by themselves.

The shard count is checked: every shard keeps ``PREFIX:shards`` = ``"i/n"``, written
on first use; a process that finds another value refuses to start, pointing to
``manage.py reshard`` (docs/shards.md).
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import redis
from redis import asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SERVICE = "mymaster"
STORE_MAX_CONNECTIONS = 64


def shard_of(symbol: str, n: int) -> int:
    """The shard of `symbol` among `n`: crc32 of the upper-cased symbol modulo n."""
    if n <= 1:
        return 0
    return binascii.crc32(symbol.upper().encode()) % n


class ShardCountMismatch(RuntimeError):
    """A shard says it belongs to another shard count (or place) than REDIS_URL gives."""


@dataclass(frozen=True)
class ShardAddress:
    """One shard's address, parsed from its URL."""

    url: str
    index: int = 0
    sentinels: list[tuple[str, int]] = field(default_factory=list)  # empty: a plain Redis
    service: str = ""
    db: int = 0
    password: str | None = None
    options: dict[str, str] = field(default_factory=dict)  # other query parameters of a Sentinel URL

    @property
    def sentinel(self) -> bool:
        return bool(self.sentinels)

    @property
    def shown(self) -> str:
        """The URL with its password blanked, for logs and /healthz."""
        return redact(self.url)


def redact(url: str) -> str:
    """`url` without its password (``redis://:***@host``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def _host_port(text: str, url: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT of a sentinel in {redact(url)!r}, got {text!r}")
    return host.strip("[]"), int(port)


def parse_address(url: str, index: int = 0) -> ShardAddress:
    """One shard's URL. Raises ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss", "unix"):
        return ShardAddress(url, index)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(
            f"REDIS_URL: expected redis://, rediss://, unix:// or {SENTINEL_SCHEME}:// URLs, got {redact(url)!r}"
        )
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if not netloc:
        raise ValueError(f"REDIS_URL: {redact(url)!r} names no sentinel (HOST:PORT)")
    sentinels = [_host_port(netloc, url)]
    query = parse_qs(parts.query)
    sentinels += [_host_port(s, url) for s in query.pop("sentinel", [])]
    path = [p for p in parts.path.split("/") if p]
    service = unquote(path[0]) if path else DEFAULT_SERVICE
    db = int(path[1]) if len(path) > 1 and path[1].isdigit() else 0
    password = unquote(parts.password) if parts.password else None
    options = {k: v[-1] for k, v in query.items()}
    return ShardAddress(url, index, sentinels, service, db, password, options)


def parse_urls(value: str) -> list[ShardAddress]:
    """The shards of a REDIS_URL value: one per comma-separated URL, in order."""
    urls = [u.strip() for u in value.split(",") if u.strip()]
    return [parse_address(u, i) for i, u in enumerate(urls)]


def layer_host(address: ShardAddress, max_connections: int) -> dict[str, Any]:
    """The channels_redis host entry of a shard (channels_redis.utils.create_pool): a URL,
    or the sentinels and service name of a Sentinel-managed one. No socket timeout: the
    layer's reads block (redis-py >= 8 defaults to 5 s, which breaks them)."""
    if not address.sentinel:
        return {"address": address.url, "socket_timeout": None, "max_connections": max_connections}
    host: dict[str, Any] = {
        "master_name": address.service,
        "sentinels": address.sentinels,
        "sentinel_kwargs": _sentinel_kwargs(address),
        "socket_timeout": None,
        "socket_connect_timeout": 2.0,
        "max_connections": max_connections,
        "db": address.db,
    }
    if address.password:
        host["password"] = address.password
    return host


def _sentinel_kwargs(address: ShardAddress) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"socket_timeout": float(address.options.get("socket_timeout", 1.0))}
    kwargs["socket_connect_timeout"] = kwargs["socket_timeout"]
    if "sentinel_password" in address.options:
        kwargs["password"] = address.options["sentinel_password"]
    return kwargs


def _retry() -> dict[str, Any]:
    # a pooled connection that died with a network blip fails once: retry on a new one
    return {
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        "retry_on_error": [redis_errors.ConnectionError, redis_errors.TimeoutError],
    }


def connect(address: ShardAddress | str, socket_timeout: float | None = 5.0, **extra: Any) -> aioredis.Redis:
    """A Redis client of the store on one shard: a blocking pool of 64 connections and a
    5 s socket timeout for a plain Redis; for a Sentinel-managed shard, a client of its
    current primary (found again through the sentinels after a failover)."""
    if isinstance(address, str):
        address = parse_address(address)
    options: dict[str, Any] = {
        "socket_connect_timeout": 2.0,
        "socket_timeout": socket_timeout,
        "health_check_interval": 10,
        **_retry(),
        **extra,
    }
    if not address.sentinel:
        # A blocking pool: a burst of requests waits for a free connection instead of failing
        # with MaxConnectionsError (redis-py's default pool raises at its limit).
        options.setdefault("max_connections", STORE_MAX_CONNECTIONS)
        pool = aioredis.BlockingConnectionPool.from_url(address.url, timeout=5, **options)
        return aioredis.Redis(connection_pool=pool)
    sentinel = Sentinel(address.sentinels, sentinel_kwargs=_sentinel_kwargs(address))
    if address.password:
        options["password"] = address.password
    options.setdefault("max_connections", 1000)  # no blocking pool with Sentinel: room for bursts
    client: aioredis.Redis = sentinel.master_for(address.service, db=address.db, **options)
    return client


def connect_sync(address: ShardAddress | str, timeout: float = 2.0) -> redis.Redis:
    """A synchronous client of one shard (Django signals, management commands)."""
    if isinstance(address, str):
        address = parse_address(address)
    if not address.sentinel:
        return redis.Redis.from_url(address.url, socket_connect_timeout=timeout, socket_timeout=timeout)
    from redis.sentinel import Sentinel as SyncSentinel

    kwargs = _sentinel_kwargs(address)
    sentinel = SyncSentinel(address.sentinels, sentinel_kwargs=kwargs)
    client: redis.Redis = sentinel.master_for(
        address.service,
        db=address.db,
        password=address.password,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
    )
    return client


def marker_key(prefix: str) -> str:
    return f"{prefix}:shards"


def marker(index: int, count: int) -> str:
    return f"{index}/{count}"


async def check_marker(client: aioredis.Redis, prefix: str, index: int, count: int, shown: str) -> None:
    """Make sure shard `index` of `count` says so (``PREFIX:shards``), writing it when
    it says nothing. Raises ShardCountMismatch when it says something else."""
    key, want = marker_key(prefix), marker(index, count)
    await client.set(key, want, nx=True)
    found = await client.get(key)
    text = found.decode() if isinstance(found, bytes) else str(found)
    if text != want:
        raise ShardCountMismatch(
            f"shard {index} ({shown}) holds prefix {prefix!r} as shard {text} but REDIS_URL makes it "
            f"shard {want}: the shard count or order changed. Move the symbols first with "
            "`python manage.py reshard --from OLD_URLS --to NEW_URLS` (docs/shards.md)"
        )
