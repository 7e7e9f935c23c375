"""WebSocket routes."""

from __future__ import annotations

from django.conf import settings
from django.urls import path

from consumers.consumer import StreamConsumer
from consumers.seed import SeedConsumer

_consumer = SeedConsumer if settings.MARKETSTREAM["CONSUMER"] == "seed" else StreamConsumer

websocket_urlpatterns = [
    path("ws/v1/stream", _consumer.as_asgi()),
]
