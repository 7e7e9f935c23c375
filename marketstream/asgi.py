"""ASGI entry point: `uvicorn marketstream.asgi:application`.

HTTP goes to Django; `/ws/...` to the consumers; the lifespan starts the embedded feed
when there is no REDIS_URL.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketstream.settings")
django_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from consumers.routing import websocket_urlpatterns  # noqa: E402
from marketstream import runtime  # noqa: E402

log = logging.getLogger(__name__)


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Start the embedded feed at startup (embedded default only), stop it at shutdown."""
    feed: runtime.EmbeddedFeed | None = None
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                if runtime.embedded():
                    feed = runtime.EmbeddedFeed()
                    await feed.start()
            except Exception as exc:
                log.exception("startup failed")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            try:
                if runtime.uses_hub():
                    await asyncio.wait_for(runtime.get_hub(), 5.0)
            except Exception as exc:  # serve anyway: /healthz says 503 and the hub retries per connection
                log.error("the hub cannot reach its channel layer yet: %s", exc)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if feed is not None:
                await feed.close()
            hub = runtime.current_hub()
            if hub is not None:
                await hub.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


application = ProtocolTypeRouter(
    {
        "http": django_app,
        "websocket": URLRouter(websocket_urlpatterns),
        "lifespan": lifespan,
    }
)
