"""HTTP beside the stream: landing page, catalog, health, metrics (PROTOCOL.md)."""

from __future__ import annotations

import asyncio

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from prometheus_client import CONTENT_TYPE_LATEST

from marketstream import metrics, runtime


async def index(request: HttpRequest) -> HttpResponse:
    return render(request, "index.html", {"embedded": runtime.embedded()})


async def symbols(request: HttpRequest) -> JsonResponse:
    """The catalog: every symbol with its last tick (null before its first)."""
    try:
        catalog = await asyncio.wait_for(runtime.get_store().catalog(), 2.0)
    except Exception as exc:
        return JsonResponse({"error": "unavailable", "message": f"catalog unavailable: {exc}"}, status=503)
    return JsonResponse({"symbols": [{"symbol": s, "last": t.decode() if t else None} for s, t in catalog.items()]})


async def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the store (Redis) answers and the hub's channel-layer receiver runs; 503 otherwise."""
    checks: dict[str, str] = {}
    info: dict[str, float] = {}
    try:
        await asyncio.wait_for(runtime.get_store().ping(), 1.0)
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"failed: {type(exc).__name__}: {exc}"
    if runtime.uses_hub():
        try:
            hub = await asyncio.wait_for(runtime.get_hub(), 2.0)
            checks["layer"] = "ok" if hub.alive else "failed: receiver stopped"
            if hub.last_message is not None:  # information: an idle hub gets no messages
                info["last_message_age_s"] = round(hub.clock() - hub.last_message, 3)
        except Exception as exc:
            checks["layer"] = f"failed: {type(exc).__name__}: {exc}"
    ok = all(v == "ok" for v in checks.values())
    body = {"status": "ok" if ok else "unavailable", "checks": checks, **info}
    return JsonResponse(body, status=200 if ok else 503)


async def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(metrics.render(runtime.current_hub()), content_type=CONTENT_TYPE_LATEST)
