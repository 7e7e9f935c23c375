"""The baseline's HTTP: what the benchmark asks of a hub (health and the catalog)."""

from __future__ import annotations

import asyncio

from django.http import HttpRequest, JsonResponse
from django.urls import path

from marketstream.adapters.redis_store import RedisStore


def _store(request: HttpRequest) -> RedisStore:
    store: RedisStore = request.scope["state"]["store"]  # type: ignore[attr-defined]  # set by the lifespan
    return store


async def healthz(request: HttpRequest) -> JsonResponse:
    try:
        await asyncio.wait_for(_store(request).ping(), 1.0)
    except Exception as exc:
        return JsonResponse({"status": "unavailable", "message": str(exc)}, status=503)
    return JsonResponse({"status": "ok"})


async def symbols(request: HttpRequest) -> JsonResponse:
    catalog = await asyncio.wait_for(_store(request).catalog(), 2.0)
    return JsonResponse({"symbols": [{"symbol": s, "last": t.decode() if t else None} for s, t in catalog.items()]})


urlpatterns = [path("healthz", healthz), path("api/v1/symbols", symbols)]
