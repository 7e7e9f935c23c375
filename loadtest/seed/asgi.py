"""ASGI entry point of the seed baseline: `uvicorn loadtest.seed.asgi:application` with
DJANGO_SETTINGS_MODULE=loadtest.seed.settings (`loadtest.services.start_hub` does both)."""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loadtest.seed.settings")
django_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import path  # noqa: E402

from loadtest.seed.consumer import SeedConsumer  # noqa: E402
from marketstream.adapters.redis_store import RedisStore, connect  # noqa: E402


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Put the Redis store (for /healthz and the catalog) in the lifespan state."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if not settings.REDIS_URL:
                await send({"type": "lifespan.startup.failed", "message": "the seed baseline needs REDIS_URL"})
                return
            scope["state"]["store"] = RedisStore(connect(settings.REDIS_URL), settings.MARKETSTREAM["PREFIX"])
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


application = ProtocolTypeRouter(
    {
        "http": django_app,
        "websocket": URLRouter([path("ws/v1/stream", SeedConsumer.as_asgi())]),
        "lifespan": lifespan,
    }
)
