"""`python -m loadtest.seedserve`: the seed tutorial's app, served as the benchmark's baseline.

Django for HTTP and `consumers.seed.SeedConsumer` at ``/ws/v1/stream``, on the channel layer
of the settings (MARKETSTREAM_LAYER=core for the baseline), and nothing else: no hub, no
lifespan. `marketstream.serve` cannot serve the baseline as is: its lifespan starts the
hub, whose receive loop on the core layer polls a channel of its own ("hub." prefix)
while holding the layer's process-wide receive lock, so the seed consumers' messages
("specific." channels) are read only when that poll times out (every few seconds).

Do not GET /healthz on this server: that view starts the hub (and the starvation above).
Wait for GET /api/v1/symbols instead. Nothing is imported at module level beyond the
standard library and uvicorn, so ``locust -f loadtest`` can import this module.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import uvicorn


def make_app() -> Any:
    """The ASGI application (a uvicorn factory): Django HTTP + the seed consumer."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketstream.settings")
    from django.core.asgi import get_asgi_application

    django_app = get_asgi_application()
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path

    from consumers.seed import SeedConsumer

    return ProtocolTypeRouter(
        {"http": django_app, "websocket": URLRouter([path("ws/v1/stream", SeedConsumer.as_asgi())])}
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the seed pattern (the benchmarks' baseline) with uvicorn.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    uvicorn.run(
        "loadtest.seedserve:make_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="off",
        log_level=args.log_level,
        access_log=False,
    )


if __name__ == "__main__":
    main()
