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
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketstream.settings")
django_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

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


application = ProtocolTypeRouter(
    {
        "http": django_app,
        "websocket": URLRouter(websocket_urlpatterns),
        "lifespan": lifespan,
    }
)
