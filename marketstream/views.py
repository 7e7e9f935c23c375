"""HTTP beside the stream: landing page, catalog, health, metrics (PROTOCOL.md).

The views take the process's services from the lifespan state (`marketstream.asgi`).
"""

from __future__ import annotations

import asyncio

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from prometheus_client import CONTENT_TYPE_LATEST

from marketstream import metrics
from marketstream.wiring import HUB_START_TIMEOUT, Services, embedded


def services_of(request: HttpRequest) -> Services:
    """The services the lifespan built; raises RuntimeError when there are none."""
    scope = getattr(request, "scope", None) or {}
    services = scope.get("state", {}).get("services")
    if not isinstance(services, Services):
        raise RuntimeError("no services in the lifespan state: serve with `python -m marketstream.serve`")
    return services


async def index(request: HttpRequest) -> HttpResponse:
    return render(request, "index.html", {"embedded": embedded()})


async def symbols(request: HttpRequest) -> JsonResponse:
    """The catalog: every symbol with its last tick (null before its first)."""
    try:
        catalog = await asyncio.wait_for(services_of(request).store.catalog(), 2.0)
    except Exception as exc:
        return JsonResponse({"error": "unavailable", "message": f"catalog unavailable: {exc}"}, status=503)
    return JsonResponse({"symbols": [{"symbol": s, "last": t.decode() if t else None} for s, t in catalog.items()]})


async def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the store (Redis) answers and the hub's receiver runs; 503 otherwise."""
    checks: dict[str, str] = {}
    info: dict[str, float] = {}
    try:
        services = services_of(request)
    except RuntimeError as exc:
        return JsonResponse({"status": "unavailable", "checks": {"services": f"failed: {exc}"}}, status=503)
    try:
        await asyncio.wait_for(services.store.ping(), 1.0)
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"failed: {type(exc).__name__}: {exc}"
    hub = services.hub
    try:
        await asyncio.wait_for(hub.start(), HUB_START_TIMEOUT)
        checks["layer"] = "ok" if hub.alive else "failed: receiver stopped"
        if hub.stats.last_message is not None:  # information: an idle hub gets no messages
            info["last_message_age_s"] = round(hub.clock() - hub.stats.last_message, 3)
    except Exception as exc:
        checks["layer"] = f"failed: {type(exc).__name__}: {exc}"
    ok = all(v == "ok" for v in checks.values())
    body = {"status": "ok" if ok else "unavailable", "checks": checks, **info}
    return JsonResponse(body, status=200 if ok else 503)


async def metrics_view(request: HttpRequest) -> HttpResponse:
    try:
        hub = services_of(request).hub
    except RuntimeError:
        hub = None
    return HttpResponse(metrics.render(hub), content_type=CONTENT_TYPE_LATEST)
