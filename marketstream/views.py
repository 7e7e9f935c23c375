"""HTTP beside the stream: landing page, catalog, health, metrics (PROTOCOL.md).

The views take the process's services from the lifespan state (`marketstream.asgi`).
"""

from __future__ import annotations

import asyncio

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from prometheus_client import CONTENT_TYPE_LATEST

from marketstream import metrics
from marketstream.core.store import MAX_HISTORY_READ
from marketstream.core.symbols import normalize
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
    """The catalog: every symbol with its epoch and last tick (null before its first)."""
    try:
        catalog = await asyncio.wait_for(services_of(request).store.catalog(), 2.0)
    except Exception as exc:
        return JsonResponse({"error": "unavailable", "message": f"catalog unavailable: {exc}"}, status=503)
    entries = [
        {"symbol": s, "epoch": t.epoch if t else None, "last": t.decode() if t else None} for s, t in catalog.items()
    ]
    return JsonResponse({"symbols": entries})


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": code, "message": message}, status=status)


async def history(request: HttpRequest) -> JsonResponse:
    """`GET /api/v1/history?symbol=S&limit=L[&after_seq=N]`: the last L ticks, or the
    first L after N, oldest first, with the symbol's epoch and the oldest seq kept."""
    symbol = normalize(request.GET.get("symbol", ""))
    if symbol is None:
        return _error(400, "bad_request", "symbol: expected 1-32 characters of A-Z 0-9 . - / : _")
    try:
        limit = int(request.GET.get("limit", "100"))
        after = request.GET.get("after_seq")
        after_seq = int(after) if after is not None else None
    except ValueError:
        return _error(400, "bad_request", "limit and after_seq must be integers")
    if not 1 <= limit <= MAX_HISTORY_READ:
        return _error(400, "bad_request", f"limit must be 1..{MAX_HISTORY_READ}, got {limit}")
    if after_seq is not None and after_seq < 0:
        return _error(400, "bad_request", f"after_seq must be >= 0, got {after_seq}")
    try:
        store = services_of(request).store
        if not (await asyncio.wait_for(store.known([symbol]), 2.0))[0]:
            return _error(404, "unknown_symbol", f"{symbol} is not in the catalog")
        found = await asyncio.wait_for(store.history(symbol, after_seq, limit), 5.0)
    except Exception as exc:
        return _error(503, "unavailable", f"history unavailable: {exc}")
    ticks = [t.decode() for t in found.ticks]
    return JsonResponse({"symbol": symbol, "epoch": found.epoch, "first_seq": found.first_seq, "ticks": ticks})


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
