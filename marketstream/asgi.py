"""ASGI entry point: `uvicorn marketstream.asgi:application` (see `marketstream.serve`).

HTTP goes to Django; `/ws/...` to the consumers. The lifespan builds the process's
services (`wiring.Services`: layer, store, transport, hub, and the embedded feed when
there is no REDIS_URL) and hands them out in the lifespan state, which the server copies
into every connection's scope: `scope["state"]["hub"]` for consumers,
`scope["state"]["services"]` for views. The server must support lifespan state
(uvicorn does).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketstream.settings")
django_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from consumers.routing import websocket_urlpatterns  # noqa: E402
from marketstream import redaction  # noqa: E402
from marketstream.wiring import Services  # noqa: E402

log = logging.getLogger(__name__)
redaction.install()  # after Django's logging setup: no key or token in uvicorn's handshake lines


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Build and start the services at startup, stop them at shutdown."""
    services: Services | None = None
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if "state" not in scope:
                reason = "this ASGI server has no lifespan state; serve with `python -m marketstream.serve` (uvicorn)"
                await send({"type": "lifespan.startup.failed", "message": reason})
                return
            try:
                services = Services.build()
                await services.start()
            except Exception as exc:
                log.exception("startup failed")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            scope["state"].update(services=services, hub=services.hub, gate=services.gate)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if services is not None:
                await services.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


class LeanHandler(ASGIHandler):
    """Django for the API, /healthz, /metrics and static files, without the middleware stack.

    Those views need no session, CSRF or messages middleware (credentials are the gate's,
    read from the request itself), and each `MiddlewareMixin` runs its hooks through a
    thread hop: measured, about 3.5 ms of CPU per request with the stack, most of it
    starting threads. Views' exceptions still become responses.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        with override_settings(MIDDLEWARE=[]):
            super().load_middleware(is_async)


LEAN_PATHS = ("/api/", "/healthz", "/metrics", "/static/")
NOSNIFF = (b"x-content-type-options", b"nosniff")  # what SecurityMiddleware would add to JSON
lean_app = LeanHandler()


async def http(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """HTTP: the API, health, metrics and static files without middleware; pages and the admin with it."""
    if not scope["path"].startswith(LEAN_PATHS):
        await django_app(scope, receive, send)
        return

    async def send_nosniff(message: Mapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), NOSNIFF]}
        await send(message)

    await lean_app(scope, receive, send_nosniff)


application = ProtocolTypeRouter(
    {
        "http": http,
        "websocket": URLRouter(websocket_urlpatterns),
        "lifespan": lifespan,
    }
)
