"""The gate: who may connect, with what rights, and ending what a revocation takes away.

`admit` decides a handshake (or an HTTP request) from its credentials, in this order:
`Authorization: Bearer KEY`, `?token=` (a key or a token from `POST /api/v1/tokens`),
a logged-in Django session, and anonymous access when the hub allows it. A credential
that is given and bad is refused, never downgraded to anonymous; a session cookie that
gives no grant counts as no credential (cookies are sent whether or not meant). A
browser `Origin`, when sent, must be the hub's own, one of MARKETSTREAM_ALLOWED_ORIGINS,
or one of the key's own.

`hold` counts a connection against its hub (`max_connections`) and its key (a lease in
the shared `Leases`, so that all hubs together keep the key's cap). The gate renews its
leases, closes connections of revoked or expired grants with 4003, and ends
subscriptions that a grant no longer allows (`Hub.restrict`). Nothing here waits for
the database on the event loop: grants come from the `GrantBook` in memory.

Keys and tokens are never logged: log lines name a grant by its id and name.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.http.cookie import parse_cookie

from consumers import tokens
from consumers.grants import ANONYMOUS, Grant, GrantBook, run_db
from marketstream.core.closes import Close
from marketstream.core.connection import Connection
from marketstream.core.entitlements import Entitlement
from marketstream.core.hub import Hub
from marketstream.core.leases import Leases

log = logging.getLogger(__name__)

LEASE_TIMEOUT = 2.0  # seconds a handshake waits for the shared connection count
EXPIRY_CHECK = 1.0  # seconds between checks for grants that expired while connected
LAST_USED_FLUSH = 30.0  # seconds between writes of keys' last_used
MAX_CREDENTIAL_CHARS = 512  # a longer key or token is refused unread

Listener = Callable[[Callable[[], None], asyncio.Event], Coroutine[Any, Any, None]]


class Denied(Exception):
    """A refused credential: HTTP `status` (401 missing or bad, 403 not allowed), a
    machine `code` and a `message` for people (which never repeats the credential)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request offers: at most one of each kind, as sent."""

    key: str | None = None  # Authorization: Bearer
    token: str | None = None  # ?token=
    session: str | None = None  # the Django session cookie
    origin: str | None = None
    host: str | None = None

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> Credentials:
        """From an ASGI scope's headers and query string."""
        headers: dict[str, str] = {}
        for name, value in scope.get("headers") or []:
            headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return cls.parse(headers, query.get("token", [None])[0])

    @classmethod
    def parse(cls, headers: Mapping[str, str], token: str | None) -> Credentials:
        """From lower-cased header names and the `token` query parameter."""
        key = None
        scheme, _, value = headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            key = value.strip()
        session = None
        if "cookie" in headers:
            session = parse_cookie(headers["cookie"]).get(settings.SESSION_COOKIE_NAME) or None
        return cls(key, token or None, session, headers.get("origin"), headers.get("host"))


@dataclass
class Access:
    """The gate's settings (from MARKETSTREAM_* settings by `from_settings`)."""

    anonymous: Grant | None  # None: a credential is required
    allowed_origins: frozenset[str] = frozenset()
    secret: str = ""
    token_ttl: int = 300
    max_connections: int = 10000  # per hub process

    @classmethod
    def from_settings(cls, book: GrantBook) -> Access:
        config = settings.MARKETSTREAM
        anonymous = None
        if config["ANONYMOUS"]:
            entitlement = Entitlement.parse(config["ANONYMOUS_SYMBOLS"])
            anonymous = Grant(ANONYMOUS, ANONYMOUS, entitlement, book.defaults, 0)
        return cls(
            anonymous,
            frozenset(config["ALLOWED_ORIGINS"]),
            settings.SECRET_KEY,
            config["TOKEN_TTL_S"],
            config["MAX_CONNECTIONS"],
        )


def same_origin(origin: str, host: str | None) -> bool:
    """Whether a browser `Origin` names the host the request was sent to."""
    if not host:
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()


@dataclass
class Held:
    """The connections of one grant on this hub, and their lease members."""

    grant: Grant
    members: dict[Connection, str] = field(default_factory=dict)


class Gate:
    """Admission and revocation for one hub process. `await start()`, then `admit`,
    `hold` and `release` per connection; `await stop()` at shutdown."""

    def __init__(self, hub: Hub, book: GrantBook, leases: Leases, access: Access, listen: Listener | None = None):
        self.hub = hub
        self.book = book
        self.leases = leases
        self.access = access
        self.listen = listen
        self.hub_id = uuid.uuid4().hex[:12]
        self.held: dict[str, Held] = {}  # grant id -> its connections here
        self._grant_of: dict[Connection, str] = {}
        self._used: set[str] = set()  # key grant ids admitted since the last last_used write
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.counts = {"admitted": 0, "refused": 0, "over_key_limit": 0, "hub_full": 0, "revoked": 0}
        book.on_change = self._changed

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        from consumers.signals import grants_changed

        grants_changed.connect(self._heard, weak=False, dispatch_uid=f"gate-{self.hub_id}")
        await self.book.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._every(self.leases.ttl / 3, self._renew), name="gate-renew"),
            loop.create_task(self._every(EXPIRY_CHECK, self._expire), name="gate-expiry"),
            loop.create_task(self._every(LAST_USED_FLUSH, self._write_last_used), name="gate-last-used"),
        ]
        if self.listen is not None:
            self._tasks.append(loop.create_task(self.listen(self.book.changed, self._stop), name="gate-notices"))

    async def stop(self) -> None:
        from consumers.signals import grants_changed

        grants_changed.disconnect(dispatch_uid=f"gate-{self.hub_id}")
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._write_last_used()
        await self.book.stop()

    def _heard(self, sender: Any, **kwargs: Any) -> None:
        self.book.changed()

    async def _every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:
                log.exception("gate: %s failed", job.__name__)

    # -- admission ------------------------------------------------------------------

    async def admit(self, credentials: Credentials) -> Grant:
        """The grant of a handshake or request; raises Denied (401: missing or bad
        credential, 403: an origin that is not allowed)."""
        grant = await self._identify(credentials)
        origin = credentials.origin
        if origin is not None and not self.origin_allowed(origin, credentials.host, grant):
            self.counts["refused"] += 1
            raise Denied(403, "forbidden_origin", f"origin {origin[:100]!r} is not allowed")
        if grant.key_hash:
            self._used.add(grant.id)
        self.counts["admitted"] += 1
        return grant

    async def admits_without_key(self, credentials: Credentials) -> bool:
        """Whether these credentials would be admitted without a key or token: anonymous
        access is on, or the session has a usable grant. For pages, which ask for a key
        only when one is needed. Counts nothing."""
        if self.access.anonymous is not None:
            return True
        if credentials.session is None:
            return False
        grant = await self.book.session_grant(credentials.session[:MAX_CREDENTIAL_CHARS])
        return grant is not None and not grant.expired(time.time())

    def origin_allowed(self, origin: str, host: str | None, grant: Grant) -> bool:
        allowed = self.access.allowed_origins
        return "*" in allowed or origin in allowed or origin in grant.origins or same_origin(origin, host)

    async def _identify(self, credentials: Credentials) -> Grant:
        now = time.time()
        if credentials.key is not None:
            return self._usable(await self._from_key(credentials.key), now, "key")
        if credentials.token is not None:
            token = credentials.token
            if token.startswith(tokens.TOKEN_PREFIX):
                gid = tokens.verify(token, self.access.secret)
                grant = self.book.get(gid) if gid is not None else None
                return self._usable(grant, now, "token")
            return self._usable(await self._from_key(token), now, "key")
        if credentials.session is not None:
            grant = await self.book.session_grant(credentials.session[:MAX_CREDENTIAL_CHARS])
            if grant is not None:
                return self._usable(grant, now, "session")
        if self.access.anonymous is not None:
            return self.access.anonymous
        self.counts["refused"] += 1
        raise Denied(401, "unauthorized", "a key is required: Authorization: Bearer KEY, ?token=, or a session")

    async def _from_key(self, key: str) -> Grant | None:
        if len(key) > MAX_CREDENTIAL_CHARS:
            return None
        return await self.book.find_key(key)

    def _usable(self, grant: Grant | None, now: float, kind: str) -> Grant:
        if grant is None:
            self.counts["refused"] += 1
            raise Denied(401, "unauthorized", f"the {kind} is not valid (unknown, revoked or expired)")
        if grant.expired(now):
            self.counts["refused"] += 1
            raise Denied(401, "unauthorized", f"the {kind} has expired")
        return grant

    def mint(self, grant: Grant) -> tuple[str, int]:
        """A short-lived token for `grant` (a key's); its expiry in Unix seconds."""
        ttl = self.access.token_ttl
        if grant.expires is not None:  # never outlive the key
            ttl = max(1, min(ttl, int(grant.expires - time.time())))
        return tokens.mint(grant.id, ttl, self.access.secret)

    # -- connections ----------------------------------------------------------------

    async def hold(self, grant: Grant, conn_id: str) -> tuple[Close, str] | None:
        """Count a new connection of `grant` before it is accepted. Returns None when it
        may stay, or the close code and reason it gets once accepted (1013: this hub is
        full or the count cannot be reached; 4001: the key is over its cap)."""
        if len(self.hub.connections) >= self.access.max_connections:
            self.counts["hub_full"] += 1
            return Close.TRY_AGAIN_LATER, f"hub full: {self.access.max_connections} connections"
        if grant.max_connections <= 0:
            return None
        member = f"{self.hub_id}:{conn_id}"
        try:
            taken = await asyncio.wait_for(self.leases.acquire(grant.id, member, grant.max_connections), LEASE_TIMEOUT)
        except Exception as exc:
            log.warning("gate: cannot count the connections of %s (%s: %s)", grant.id, type(exc).__name__, exc)
            return Close.TRY_AGAIN_LATER, "cannot count the key's connections now; try again"
        if not taken:
            self.counts["over_key_limit"] += 1
            return Close.KEY_OVER_LIMIT, f"key over its connection limit: max_connections {grant.max_connections}"
        return None

    def attach(self, grant: Grant, conn: Connection, conn_id: str) -> None:
        """Remember an accepted connection of `grant` (after `hold` let it stay)."""
        held = self.held.get(grant.id)
        if held is None:
            held = self.held[grant.id] = Held(self.book.get(grant.id) or grant)
        held.members[conn] = f"{self.hub_id}:{conn_id}"
        self._grant_of[conn] = grant.id

    async def release_lease(self, grant: Grant, conn_id: str) -> None:
        """Give back a lease taken by `hold` for a connection that was not attached."""
        if grant.max_connections > 0:
            await self._release(grant.id, f"{self.hub_id}:{conn_id}")

    async def release(self, conn: Connection) -> None:
        """Forget a connection that ended, and give back its lease."""
        gid = self._grant_of.pop(conn, None)
        held = self.held.get(gid) if gid is not None else None
        if gid is None or held is None:
            return
        member = held.members.pop(conn, None)
        if not held.members:
            del self.held[gid]
        if member is not None and held.grant.max_connections > 0:
            await self._release(gid, member)

    async def _release(self, gid: str, member: str) -> None:
        try:
            await asyncio.wait_for(self.leases.release(gid, member), LEASE_TIMEOUT)
        except Exception as exc:  # the lease expires by itself
            log.warning("gate: lease of %s not released (%s); it expires in %.0f s", gid, exc, self.leases.ttl)

    async def _renew(self) -> None:
        held = {gid: list(h.members.values()) for gid, h in self.held.items() if h.grant.max_connections > 0}
        if held:
            await self.leases.renew(held)

    # -- changes --------------------------------------------------------------------

    def _changed(self, old: Mapping[str, Grant], new: Mapping[str, Grant]) -> None:
        """After a reload: close what was revoked, restrict what lost symbols."""
        now = time.time()
        for gid, held in list(self.held.items()):
            if gid == ANONYMOUS:
                continue
            grant = new.get(gid)
            if grant is None:
                self._end(held, f"{held.grant.name}: revoked")
            elif grant.expired(now):
                self._end(held, f"{held.grant.name}: expired")
            else:
                if not grant.same_rights(held.grant):
                    for conn in list(held.members):
                        lost = self.hub.restrict(conn, grant.entitlement)
                        if lost:
                            log.info("gate: %s lost %d symbols on a connection", gid, len(lost))
                held.grant = grant

    async def _expire(self) -> None:
        now = time.time()
        for held in list(self.held.values()):
            if held.grant.expired(now):
                self._end(held, f"{held.grant.name}: expired")

    def _end(self, held: Held, reason: str) -> None:
        log.info("gate: closing %d connections of %s (%s)", len(held.members), held.grant.id, reason)
        for conn in list(held.members):
            if not conn.closed:
                self.counts["revoked"] += 1
                conn.close(Close.KEY_REVOKED, reason)

    async def _write_last_used(self) -> None:
        if not self._used:
            return
        used, self._used = self._used, set()
        pks = [int(gid.split(":", 1)[1]) for gid in used if gid.startswith("key:")]

        def write() -> None:
            from django.utils import timezone

            from consumers.models import ApiKey

            ApiKey.objects.filter(pk__in=pks).update(last_used=timezone.now())

        try:
            await run_db(self.book.executor, write)
        except Exception as exc:
            log.warning("gate: last_used not written (%s: %s)", type(exc).__name__, exc)


def credentials_of(headers: Iterable[tuple[str, str]], token: str | None) -> Credentials:
    """Credentials of an HTTP request (Django's `request.headers.items()` and `?token=`)."""
    return Credentials.parse({name.lower(): value for name, value in headers}, token)
