"""WebSocket routes."""

from __future__ import annotations

from django.urls import path

from consumers.consumer import StreamConsumer

websocket_urlpatterns = [
    path("ws/v1/stream", StreamConsumer.as_asgi()),
]
