"""Settings of the seed baseline: the product's, with the seed's routes and channel layer.

`MARKETSTREAM_LAYER` picks the layer: `core` (channels_redis's RedisChannelLayer, the
seed tutorial's; the default) or `pubsub`. `runfeed` runs with these settings too, so the
baseline's feed publishes on the same layer (one `group_send` per tick on `core`).
"""

from __future__ import annotations

import os

from marketstream.settings import *  # noqa: F403 (the same environment variables and defaults)
from marketstream.settings import MARKETSTREAM, REDIS_URL

ROOT_URLCONF = "loadtest.seed.urls"
ASGI_APPLICATION = "loadtest.seed.asgi.application"
INSTALLED_APPS = ["channels", "feeds"]  # feeds: `manage.py runfeed` for the baseline's feed
# none of the product's session, auth and admin machinery: their apps are not installed here
MIDDLEWARE = ["django.middleware.security.SecurityMiddleware", "django.middleware.common.CommonMiddleware"]

# The baseline has no embedded default: without REDIS_URL its lifespan refuses to start.
# (No error at import: `locust -f loadtest` imports every module under loadtest/.)
_layer = os.environ.get("MARKETSTREAM_LAYER", "core")
_host = {"address": REDIS_URL, "socket_timeout": None, "max_connections": 1000}
if _layer == "core":
    _backend = "channels_redis.core.RedisChannelLayer"
    _config = {"hosts": [_host], "prefix": MARKETSTREAM["PREFIX"], "capacity": 10_000}
elif _layer == "pubsub":
    _backend = "channels_redis.pubsub.RedisPubSubChannelLayer"
    _config = {"hosts": [_host], "prefix": MARKETSTREAM["PREFIX"]}
else:
    raise RuntimeError(f"MARKETSTREAM_LAYER must be core or pubsub, got {_layer!r}")
CHANNEL_LAYERS = {"default": {"BACKEND": _backend, "CONFIG": _config}}
