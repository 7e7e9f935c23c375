"""Grants: what a credential may do, and the hub's in-memory book of them.

A `Grant` is one credential's entitlement, limits and connection cap, compiled once.
The `GrantBook` holds every key's and session user's grant in memory, so that a
handshake is a dictionary lookup and never waits for the database: the book loads
them all at start, reloads them when told that something changed (Django signals in
this process, a notice over Redis from any other: `marketstream.adapters.grant_notices`),
and every `refresh` seconds in case a notice was missed. Database work runs on the
book's own small thread pool, never on Channels' single sync thread.

Disabled keys and inactive users are not in the book: a key that is not found is
refused. Expired keys are kept with their `expires`, so that the hub can close their
connections when the time comes.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from marketstream.core.entitlements import Entitlement
from marketstream.core.limits import Limits

log = logging.getLogger(__name__)

T = TypeVar("T")
ANONYMOUS = "anonymous"
MISS_MEMORY = 4096  # hashes of unknown keys remembered (refused without asking the database again)
MISS_TTL = 5.0  # seconds an unknown key is refused from memory


@dataclass(frozen=True, slots=True)
class Grant:
    """One credential's rights. `id` is `key:PK`, `user:PK` or `anonymous`; `name` is the
    key's name or the user's name, for logs and close reasons (never the key)."""

    id: str
    name: str
    entitlement: Entitlement
    limits: Limits
    max_connections: int  # across all hubs; 0: no cap
    origins: frozenset[str] = frozenset()
    publish: bool = False
    expires: float | None = None  # Unix seconds; None: never
    key_hash: str = ""  # SHA-256 hex of a key; empty for sessions and anonymous

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def same_rights(self, other: Grant) -> bool:
        """Whether `other` grants the same symbols (limits apply to new connections only)."""
        return self.entitlement.patterns == other.entitlement.patterns


def run_db(executor: ThreadPoolExecutor, work: Callable[[], T]) -> asyncio.Future[T]:
    """Run `work` (which uses the ORM) on `executor`, with a usable database connection."""

    def job() -> T:
        from django.db import close_old_connections

        close_old_connections()
        try:
            return work()
        finally:
            close_old_connections()

    return asyncio.get_running_loop().run_in_executor(executor, job)


def load(defaults: Limits, key_max_connections: int) -> dict[str, Grant]:
    """Every enabled key's and active session user's grant, by id (synchronous: the ORM).

    A row whose entitlement or limits do not compile is logged and left out (refused).
    """
    from django.contrib.auth import get_user_model

    from consumers.models import ApiKey, Grantable, UserGrant

    grants: dict[str, Grant] = {}

    def compile_one(row: Grantable, gid: str, name: str, **more: Any) -> None:
        try:
            grants[gid] = Grant(
                gid,
                name,
                row.entitlement(),
                row.limits(defaults),
                row.max_connections if row.max_connections is not None else key_max_connections,
                publish=row.publish,
                **more,
            )
        except ValueError as exc:
            log.error("grant %s (%s) refused: %s", gid, name, exc)

    for key in ApiKey.objects.filter(disabled=False):
        expires = key.expires.timestamp() if key.expires is not None else None
        origins = frozenset(key.origins())
        compile_one(key, f"key:{key.pk}", key.name, origins=origins, expires=expires, key_hash=key.key_hash)
    for user_grant in UserGrant.objects.filter(user__is_active=True).select_related("user"):
        compile_one(user_grant, f"user:{user_grant.user.pk}", user_grant.user.get_username())
    for user in get_user_model().objects.filter(is_active=True, is_superuser=True, grant__isnull=True):
        gid = f"user:{user.pk}"
        grants[gid] = Grant(gid, user.get_username(), Entitlement.everything(), defaults, key_max_connections)
    return grants


def session_user_id(session_key: str) -> int | None:
    """The id of the logged-in user of a Django session, or None (synchronous: the ORM).

    Goes through `django.contrib.auth.get_user`, so a session whose password hash no
    longer matches (the password changed) counts as logged out.
    """
    from importlib import import_module
    from types import SimpleNamespace

    from django.conf import settings
    from django.contrib.auth import get_user

    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(SimpleNamespace(session=store))  # type: ignore[arg-type]
    return int(user.pk) if user.is_authenticated and user.pk is not None else None


class GrantBook:
    """Every grant in memory; `start()` loads them, `changed()` (thread-safe) reloads.

    `on_change(old, new)` is called on the event loop after each reload with both books
    (id -> grant), so that the caller can end what a change took away.
    """

    def __init__(
        self,
        defaults: Limits,
        key_max_connections: int,
        refresh: float,
        on_change: Callable[[Mapping[str, Grant], Mapping[str, Grant]], None] | None = None,
        workers: int = 4,
    ) -> None:
        self.defaults = defaults
        self.key_max_connections = key_max_connections
        self.refresh = refresh
        self.on_change = on_change
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grants")
        self.grants: dict[str, Grant] = {}
        self._by_hash: dict[str, str] = {}
        self._misses: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.loaded = False  # the database answered at least once
        self._failure: str | None = None  # the last reload's error, while reloads fail
        self.reloads = 0

    async def start(self) -> None:
        """Load the grants (an unreachable or unmigrated database is logged: no key is
        accepted until a reload succeeds), then keep them fresh."""
        self._loop = asyncio.get_running_loop()
        await self._reload()
        self._task = self._loop.create_task(self._keep_fresh())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)

    def changed(self) -> None:
        """Ask for a reload soon. Safe from any thread (Django signals run in threads)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            if asyncio.get_running_loop() is loop:
                self._wanted.set()
                return
        except RuntimeError:
            pass
        loop.call_soon_threadsafe(self._wanted.set)

    def get(self, gid: str) -> Grant | None:
        return self.grants.get(gid)

    def by_key(self, key: str) -> Grant | None:
        """The grant of the key `key` from memory (None: unknown or revoked)."""
        from consumers.models import ApiKey

        digest = ApiKey.hash(key)
        gid = self._by_hash.get(digest)
        grant = self.grants.get(gid) if gid is not None else None
        if grant is None or not hmac.compare_digest(grant.key_hash, digest):
            return None
        return grant

    async def find_key(self, key: str) -> Grant | None:
        """`by_key`, and for a key not in memory, one reload (a key created on another
        process a moment ago, before its notice arrived). Unknown keys are remembered for
        MISS_TTL seconds, so a client that retries a bad key costs no database work."""
        grant = self.by_key(key)
        if grant is not None:
            return grant
        from consumers.models import ApiKey

        digest = ApiKey.hash(key)
        now = time.monotonic()
        if self._misses.get(digest, 0.0) > now:
            return None
        if len(self._misses) >= MISS_MEMORY:
            self._misses = {h: t for h, t in self._misses.items() if t > now}
            if len(self._misses) >= MISS_MEMORY:
                return None  # under a storm of unknown keys: refuse from memory
        self._misses[digest] = now + MISS_TTL
        try:
            found = await run_db(self.executor, lambda: ApiKey.objects.filter(key_hash=digest, disabled=False).exists())
        except Exception as exc:  # the database is away: a key not in memory is refused, loudly
            log.warning("cannot look a key up in the database (%s: %s); refused", type(exc).__name__, exc)
            self._misses.pop(digest, None)  # asked again once the database is back
            return None
        if found:
            await self._reload()
            self._misses.pop(digest, None)
        return self.by_key(key)

    async def session_grant(self, session_key: str) -> Grant | None:
        """The grant of the user logged in with this session, or None."""
        try:
            uid = await run_db(self.executor, lambda: session_user_id(session_key))
        except Exception as exc:  # a broken session store refuses the session, loudly
            log.warning("session lookup failed: %s: %s", type(exc).__name__, exc)
            return None
        return None if uid is None else self.grants.get(f"user:{uid}")

    async def _keep_fresh(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wanted.wait(), self.refresh)
                await asyncio.sleep(0.05)  # let a burst of changes arrive: one reload for them all
            except TimeoutError:
                pass
            self._wanted.clear()
            await self._reload()

    async def _reload(self) -> None:
        try:
            fresh = await run_db(self.executor, lambda: load(self.defaults, self.key_max_connections))
        except Exception as exc:  # keep the grants held: a database blip revokes nothing
            failure = f"{type(exc).__name__}: {exc}"
            if failure != self._failure:  # once per kind of failure, not at every refresh
                hint = "" if self.loaded else "; run `python manage.py migrate`?"
                log.error(
                    "cannot read keys from the database (%s)%s; keeping %d grants", failure, hint, len(self.grants)
                )
            self._failure = failure
            return
        if self._failure is not None:
            log.info("keys read from the database again")
            self._failure = None
        old, self.grants = self.grants, fresh
        self._by_hash = {g.key_hash: gid for gid, g in fresh.items() if g.key_hash}
        self.loaded = True
        self.reloads += 1
        if self.on_change is not None and old:
            self.on_change(old, fresh)
