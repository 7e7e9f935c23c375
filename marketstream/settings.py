"""Django settings. Everything comes from environment variables with safe defaults;
the README has the table. No `REDIS_URL` means the embedded default: in-memory channel
layer and a simulated feed inside the server process.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path
from typing import Any

import dj_database_url

from marketstream.adapters import shards

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw.strip() else default


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY") or "marketstream-dev-only-insecure-key"
ALLOWED_HOSTS = [
    h.strip() for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",") if h.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "feeds",
    "consumers",
]
# sessions, auth and messages are lazy: a request that does not use them (the API, /healthz) pays nothing
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "marketstream.urls"
ASGI_APPLICATION = "marketstream.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "marketstream" / "templates"],
        "APP_DIRS": True,  # the admin's templates
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# Keys (consumers.models.ApiKey) and admin users live in the database: PostgreSQL (or any
# database Django supports) from DATABASE_URL, else a SQLite file in the data directory.
DATA_DIR = Path(os.environ.get("MARKETSTREAM_DATA_DIR") or BASE_DIR / "data")
DATABASE_URL = os.environ.get("DATABASE_URL", "").strip()
if DATABASE_URL:
    DATABASES: dict[str, Any] = {"default": dj_database_url.parse(DATABASE_URL)}
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "marketstream.sqlite3"}}
STATIC_URL = "static/"
# the dashboard's scripts, styles and vendored libraries (marketstream/static/); the admin's come from its app
STATICFILES_DIRS = [BASE_DIR / "marketstream" / "static"]
mimetypes.add_type("text/javascript", ".mjs")  # ES modules must be served as JavaScript; not every OS knows .mjs
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}

# -- marketstream -------------------------------------------------------------------

REDIS_URL = os.environ.get("REDIS_URL", "").strip()
MARKETSTREAM: dict[str, Any] = {
    # prefix of Redis keys and of the channel layer's names: hubs and feeds that share it see each other
    "PREFIX": os.environ.get("MARKETSTREAM_PREFIX", "ms"),
    "MAX_SUBSCRIPTIONS": env_int("MARKETSTREAM_MAX_SUBSCRIPTIONS", 1000),
    "MAX_MESSAGE_BYTES": env_int("MARKETSTREAM_MAX_MESSAGE_BYTES", 65536),
    "MAX_REQUESTS_PER_S": env_int("MARKETSTREAM_MAX_REQUESTS_PER_S", 50),
    "MIN_THROTTLE_MS": env_int("MARKETSTREAM_MIN_THROTTLE_MS", 0),
    "MAX_THROTTLE_MS": env_int("MARKETSTREAM_MAX_THROTTLE_MS", 60000),
    # outbox bound: past this many pending ticks a connection's outbox conflates
    "MAX_PENDING": env_int("MARKETSTREAM_MAX_PENDING", 1000),
    # a client that stays behind (conflating, or one send blocked) this long is closed with 1013
    "SLOW_CLIENT_TIMEOUT": env_float("MARKETSTREAM_SLOW_CLIENT_TIMEOUT", 5.0),
    # kernel send buffer per WebSocket connection, bytes (0: the OS default, which grows to MiBs)
    "SOCKET_SEND_BUFFER": env_int("MARKETSTREAM_SOCKET_SEND_BUFFER", 262144),
    # write already-framed frames straight to the socket where the server offers it (marketstream.serve)
    "RAW_SEND": env_bool("MARKETSTREAM_RAW_SEND", True),
    # flush each connection at most once per this many ms, at a phase of its own, to put more ticks in
    # one frame (0: every connection that got something, on the next loop turn); core/fanout.py `Stagger`
    "FLUSH_MS": env_float("MARKETSTREAM_FLUSH_MS", 0.0),
    # ticks of history kept per symbol (Redis stream, approximately), for recovery and /api/v1/history
    "HISTORY_MAXLEN": env_int("MARKETSTREAM_HISTORY_MAXLEN", 2000),
    # ticks one symbol's recovery may deliver (announced as max_recovery; at most HISTORY_MAXLEN)
    "MAX_RECOVERY": env_int("MARKETSTREAM_MAX_RECOVERY", 2000),
    # final bars kept per symbol and interval, for /api/v1/bars (0: the feeds compute no bars)
    "BARS_KEEP": env_int("MARKETSTREAM_BARS_KEEP", 500),
    # the simulated feed that runs inside the server on the embedded default
    "EMBEDDED_FEED_RATE": env_float("MARKETSTREAM_EMBEDDED_FEED_RATE", 40.0),
    # the Django admin (keys, users) at /admin/: off by default, `make run` turns it on
    "ADMIN": env_bool("MARKETSTREAM_ADMIN", False),
    # -- access (docs/security.md) --
    # clients without a credential are admitted with ANONYMOUS_SYMBOLS: off by default, `make run` turns it on
    "ANONYMOUS": env_bool("MARKETSTREAM_ANONYMOUS", False),
    "ANONYMOUS_SYMBOLS": os.environ.get("MARKETSTREAM_ANONYMOUS_SYMBOLS", "*"),
    # browser origins allowed for every credential (comma-separated; "*" any); the hub's own origin always is
    "ALLOWED_ORIGINS": [o.strip() for o in os.environ.get("MARKETSTREAM_ALLOWED_ORIGINS", "").split(",") if o.strip()],
    # WebSocket connections one hub process holds; past it a new one is accepted and closed with 1013
    "MAX_CONNECTIONS": env_int("MARKETSTREAM_MAX_CONNECTIONS", 10000),
    # concurrent connections of one key across all hubs, unless the key sets its own (0: no cap)
    "KEY_MAX_CONNECTIONS": env_int("MARKETSTREAM_KEY_MAX_CONNECTIONS", 100),
    # seconds a connection lease lives without renewal (a crashed hub's connections leave the count after it)
    "LEASE_TTL_S": env_float("MARKETSTREAM_LEASE_TTL_S", 30.0),
    # lifetime of a token from POST /api/v1/tokens, seconds
    "TOKEN_TTL_S": env_int("MARKETSTREAM_TOKEN_TTL_S", 300),
    # seconds between full reloads of key grants from the database (changes also arrive over Redis at once)
    "GRANTS_REFRESH_S": env_float("MARKETSTREAM_GRANTS_REFRESH_S", 5.0),
    # /metrics: on a separate listener on this port (0: on the main port, where it needs a key)
    "METRICS_PORT": env_int("MARKETSTREAM_METRICS_PORT", 0),
    "METRICS_HOST": os.environ.get("MARKETSTREAM_METRICS_HOST", "127.0.0.1"),
    # /metrics on the main port without a credential
    "METRICS_PUBLIC": env_bool("MARKETSTREAM_METRICS_PUBLIC", False),
    # seconds between syncs of the hub's counters into its Prometheus metrics (a scrape also syncs)
    "METRICS_SYNC_S": env_float("MARKETSTREAM_METRICS_SYNC_S", 1.0),
    # about one frame in this many (of the connections a flush sends to) has its latency sampled (feed ts to send)
    "LATENCY_SAMPLE_EVERY": env_int("MARKETSTREAM_LATENCY_SAMPLE_EVERY", 64),
    # `manage.py runfeed`: serve the feed's /metrics on this port (0: none; --metrics-port overrides)
    "FEED_METRICS_PORT": env_int("MARKETSTREAM_FEED_METRICS_PORT", 0),
    # seconds a hub keeps the subscriptions of a shard that is down before ending them (`unsubscribed`, `unavailable`)
    "SHARD_GRACE_S": env_float("MARKETSTREAM_SHARD_GRACE_S", 10.0),
    # seconds a shard has to answer a health check or a publish before it counts as down
    "SHARD_TIMEOUT_S": env_float("MARKETSTREAM_SHARD_TIMEOUT_S", 2.0),
}

# one shard per comma-separated URL (docs/shards.md); each a channels_redis host of the sharded pub/sub layer
REDIS_SHARDS = shards.parse_urls(REDIS_URL)
_max_connections = env_int("MARKETSTREAM_REDIS_MAX_CONNECTIONS", 1000)
if not REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 100_000, "group_expiry": 10**9},
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "marketstream.adapters.layer.ShardedPubSubChannelLayer",
            "CONFIG": {
                "hosts": [shards.layer_host(a, _max_connections) for a in REDIS_SHARDS],
                "prefix": MARKETSTREAM["PREFIX"],
            },
        }
    }
