"""HTTP beside the stream: landing page, catalog, history, bars, health, metrics (PROTOCOL.md).

The views take the process's services from the lifespan state (`marketstream.asgi`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, overload

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from prometheus_client import CONTENT_TYPE_LATEST

from consumers.gate import Denied, credentials_of
from consumers.grants import ANONYMOUS, Grant
from marketstream.adapters.shard_health import failure_text
from marketstream.core.bars import INTERVALS
from marketstream.core.store import MAX_HISTORY_READ, Store
from marketstream.core.symbols import normalize
from marketstream.wiring import HUB_START_TIMEOUT, Services, embedded

STARTED = round(time.time(), 3)  # the embedded pseudo-shard is up since the process started


def services_of(request: HttpRequest) -> Services:
    """The services the lifespan built; raises RuntimeError when there are none."""
    scope = getattr(request, "scope", None) or {}
    services = scope.get("state", {}).get("services")
    if not isinstance(services, Services):
        raise RuntimeError("no services in the lifespan state: serve with `python -m marketstream.serve`")
    return services


async def index(request: HttpRequest) -> HttpResponse:
    """The dashboard (marketstream/static/dashboard/, docs/dashboard.md). It asks for a key
    first when the hub would not admit this visitor without one."""
    try:
        services = services_of(request)
        key_required = not await services.gate.admits_without_key(credentials_of(request.headers.items(), None))
    except RuntimeError:
        key_required = False  # no services: the page finds out and says so
    return render(request, "index.html", {"embedded": embedded(), "key_required": key_required})


def _error(status: int, code: str, message: str) -> JsonResponse:
    response = JsonResponse({"error": code, "message": message}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="marketstream"'
    return response


class BadQuery(Exception):
    """A request the API answers with a 4xx and a JSON error (raised by the query helpers)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def entitled_symbol(request: HttpRequest, grant: Grant) -> str:
    """`?symbol=`, normalized; BadQuery 400 when malformed, 403 when not entitled."""
    symbol = normalize(request.GET.get("symbol", ""))
    if symbol is None:
        raise BadQuery(400, "bad_request", "symbol: expected 1-32 characters of A-Z 0-9 . - / : _")
    if not grant.entitlement.allows(symbol):
        raise BadQuery(403, "forbidden", f"not entitled to {symbol}")
    return symbol


@overload
def int_param(request: HttpRequest, name: str, default: int, least: int, most: int | None = None) -> int: ...
@overload
def int_param(request: HttpRequest, name: str, default: None, least: int, most: int | None = None) -> int | None: ...
def int_param(request: HttpRequest, name: str, default: int | None, least: int, most: int | None = None) -> int | None:
    """An integer query parameter in `least..most`, or `default` when absent; BadQuery 400 otherwise."""
    raw = request.GET.get(name)
    if raw is None:
        return default
    bounds = f"{least}..{most}" if most is not None else f">= {least}"
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(400, "bad_request", f"{name} must be an integer {bounds}, got {raw[:20]!r}") from None
    if value < least or (most is not None and value > most):
        raise BadQuery(400, "bad_request", f"{name} must be {bounds}, got {value}")
    return value


async def require_known(store: Store, symbol: str) -> None:
    """BadQuery 404 when `symbol` is not in the catalog (the store's errors pass through)."""
    if not (await asyncio.wait_for(store.known([symbol]), 2.0))[0]:
        raise BadQuery(404, "unknown_symbol", f"{symbol} is not in the catalog")


ApiView = Callable[[HttpRequest, Services, Grant], Awaitable[HttpResponse]]


def authenticated(view: ApiView) -> Callable[[HttpRequest], Coroutine[Any, Any, HttpResponse]]:
    """Admit the request with the stream's credentials (docs/security.md): 401 with a
    JSON error when they are missing or bad, 403 when the origin is not allowed; the
    view gets the services and the caller's grant."""

    @functools.wraps(view)
    async def wrapper(request: HttpRequest) -> HttpResponse:
        try:
            services = services_of(request)
        except RuntimeError as exc:
            return _error(503, "unavailable", str(exc))
        credentials = credentials_of(request.headers.items(), request.GET.get("token"))
        try:
            grant = await services.gate.admit(credentials)
            return await view(request, services, grant)
        except (Denied, BadQuery) as exc:
            return _error(exc.status, exc.code, exc.message)

    return wrapper


@authenticated
async def symbols(request: HttpRequest, services: Services, grant: Grant) -> HttpResponse:
    """The catalog of what the caller may see: each symbol with its name, kind, epoch,
    reference price and last tick (null before its first; name, kind and reference null
    when no publisher described the symbol)."""
    store = services.store
    try:
        catalog, infos = await asyncio.wait_for(asyncio.gather(store.catalog(), store.descriptions()), 2.0)
    except Exception as exc:
        return JsonResponse(
            {"error": "unavailable", "message": f"catalog unavailable: {failure_text(exc)}"}, status=503
        )
    allows = grant.entitlement.allows
    entries = []
    for s, t in catalog.items():
        if allows(s):
            info = infos.get(s)
            entries.append(
                {
                    "symbol": s,
                    "name": info.name if info else None,
                    "kind": info.kind if info else None,
                    "epoch": t.epoch if t else None,
                    "reference": info.reference if info else None,
                    "last": t.decode() if t else None,
                }
            )
    return JsonResponse({"symbols": entries})


@csrf_exempt
@require_POST
@authenticated
async def tokens(request: HttpRequest, services: Services, grant: Grant) -> HttpResponse:
    """`POST /api/v1/tokens` with a key: a short-lived token for `?token=` (browsers)."""
    if not grant.key_hash:
        return _error(403, "forbidden", "tokens are minted from a key (Authorization: Bearer KEY)")
    token, expires = services.gate.mint(grant)
    body = {"token": token, "expires": expires, "expires_in": max(0, expires - int(time.time()))}
    return JsonResponse(body, headers={"Cache-Control": "no-store"})


@authenticated
async def history(request: HttpRequest, services: Services, grant: Grant) -> HttpResponse:
    """`GET /api/v1/history?symbol=S&limit=L[&after_seq=N]`: the last L ticks, or the
    first L after N, oldest first, with the symbol's epoch and the oldest seq kept."""
    symbol, limit = entitled_symbol(request, grant), int_param(request, "limit", 100, 1, MAX_HISTORY_READ)
    after_seq = int_param(request, "after_seq", None, 0)
    try:
        store = services.store
        await require_known(store, symbol)
        found = await asyncio.wait_for(store.history(symbol, after_seq, limit), 5.0)
    except BadQuery:
        raise
    except Exception as exc:
        return _error(503, "unavailable", f"history unavailable: {failure_text(exc)}")
    ticks = [t.decode() for t in found.ticks]
    return JsonResponse({"symbol": symbol, "epoch": found.epoch, "first_seq": found.first_seq, "ticks": ticks})


@authenticated
async def bars(request: HttpRequest, services: Services, grant: Grant) -> HttpResponse:
    """`GET /api/v1/bars?symbol=S&interval=1m&limit=L`: the last L bars of the interval,
    oldest first: the final ones kept (MARKETSTREAM_BARS_KEEP), then the open one."""
    symbol = entitled_symbol(request, grant)
    interval = request.GET.get("interval", "")
    if interval not in INTERVALS:
        raise BadQuery(400, "bad_request", f"interval: expected one of {', '.join(INTERVALS)}, got {interval[:16]!r}")
    limit = int_param(request, "limit", 100, 1, MAX_HISTORY_READ)
    try:
        store = services.store
        await require_known(store, symbol)
        found = await asyncio.wait_for(store.bars(symbol, interval, limit), 5.0)
    except BadQuery:
        raise
    except Exception as exc:
        return _error(503, "unavailable", f"bars unavailable: {failure_text(exc)}")
    return JsonResponse({"symbol": symbol, "interval": interval, "bars": [b.as_dict() for b in found]})


@csrf_exempt
@require_POST
@authenticated
async def ticks(request: HttpRequest, services: Services, grant: Grant) -> HttpResponse:
    """`POST /api/v1/ticks` (HTTP ingest, feeds/ingest.py): publish a batch of ticks with a
    key that may publish; each bad tick is rejected with its reason, the others published."""
    if not grant.publish or not grant.key_hash:
        return _error(403, "forbidden", "publishing needs a key with publish permission (createkey --publish)")
    try:
        body = request.body
    except RequestDataTooBig:
        return _error(413, "too_large", f"the body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes")
    answer = await services.ingest.accept(body, request.content_type or "")
    return HttpResponse(orjson.dumps(answer.body), content_type="application/json", status=answer.status)


async def healthz(request: HttpRequest) -> JsonResponse:
    """200 while the hub's receiver runs and at least one shard serves (its Redis answers
    and this hub's subscription connection to it is up): `ok` when all do, `degraded`
    when some do; 503 `unavailable` otherwise. `shards` has each one's state, since when
    (unix seconds) and, when down, why (as the shard monitor last saw it: no Redis call
    here). The embedded default has one pseudo-shard, "memory", always up."""
    checks: dict[str, str] = {}
    info: dict[str, float] = {}
    try:
        services = services_of(request)
    except RuntimeError as exc:
        return JsonResponse({"status": "unavailable", "checks": {"services": f"failed: {exc}"}}, status=503)
    hub = services.hub
    try:
        await asyncio.wait_for(hub.start(), HUB_START_TIMEOUT)
        checks["layer"] = "ok" if hub.alive else "failed: receiver stopped"
        if hub.stats.last_message is not None:  # information: an idle hub gets no messages
            info["last_message_age_s"] = round(hub.clock() - hub.stats.last_message, 3)
    except Exception as exc:
        checks["layer"] = f"failed: {type(exc).__name__}: {exc}"
    if services.shards is None:
        shards = [{"shard": 0, "address": "memory", "state": "up", "since": STARTED}]
    else:
        shards = [h.as_dict() for h in services.shards.monitor.health]
    serving = sum(1 for s in shards if s["state"] == "up")
    checks["store"] = "ok" if serving == len(shards) else f"{serving} of {len(shards)} shards serve"
    if checks["layer"] != "ok" or not serving:
        status, code = "unavailable", 503
    else:
        status, code = ("ok" if serving == len(shards) else "degraded"), 200
    return JsonResponse({"status": status, "shards": shards, "checks": checks, **info}, status=code)


async def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text (docs/operations.md): of this process, or, with several workers,
    of every worker of this host (prometheus-client's multiprocess mode). Not public
    unless MARKETSTREAM_METRICS_PUBLIC: a key or a session is needed (anonymous access
    does not count); with MARKETSTREAM_METRICS_PORT it is served on that port only, and
    not here."""
    config = settings.MARKETSTREAM
    if config["METRICS_PORT"]:
        return _error(404, "not_found", "metrics are served on their own port (MARKETSTREAM_METRICS_PORT)")
    try:
        services = services_of(request)
    except RuntimeError as exc:
        return _error(503, "unavailable", str(exc))
    if not config["METRICS_PUBLIC"]:
        try:
            grant = await services.gate.admit(credentials_of(request.headers.items(), request.GET.get("token")))
        except Denied as exc:
            return _error(exc.status, exc.code, exc.message)
        if grant.id == ANONYMOUS:
            return _error(401, "unauthorized", "metrics need a key (or MARKETSTREAM_METRICS_PUBLIC=true)")
    return HttpResponse(services.metrics.render(), content_type=CONTENT_TYPE_LATEST)
