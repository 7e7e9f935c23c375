"""Grant notices over Redis pub/sub: "a key or a session grant changed, read them again".

Whoever changes a key (the admin, `manage.py createkey/revokekey`, a script using the
models) publishes a notice on `PREFIX:grants`; every hub listens and reloads its grants,
so a revocation reaches every hub within a second. A notice carries no secret, only
what changed (for logs). Hubs also reload on a timer, so a notice lost while Redis was
away is made up for within the refresh interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis

from marketstream.adapters import shards

log = logging.getLogger(__name__)

RETRY_DELAY = 1.0  # seconds between attempts to listen while Redis is away


def channel(prefix: str) -> str:
    return f"{prefix}:grants"


def publish(url: str, prefix: str, what: str) -> None:
    """Publish a notice on the shard at `url` (shard 0; synchronous: Django signals run in sync code). A Redis that does
    not answer is logged, not raised: the hubs' timer reload catches up."""
    try:
        client = shards.connect_sync(url)
        try:
            client.publish(channel(prefix), what)
        finally:
            client.close()
    except redis.RedisError as exc:
        log.warning("grant change not announced over Redis (%s); hubs see it at their next reload", exc)


async def listen(url: str, prefix: str, changed: Callable[[], None], stop: asyncio.Event) -> None:
    """Call `changed()` for each notice until `stop` is set; reconnects while Redis is
    away, and calls `changed()` after each reconnect (notices may have been missed)."""
    failures = 0
    while not stop.is_set():
        client = shards.connect(url, socket_timeout=None)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel(prefix))
            if failures:
                log.info("grant notices: listening again")
                changed()
            failures = 0
            while not stop.is_set():
                message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    changed()
        except (redis.RedisError, OSError) as exc:
            failures += 1
            if failures == 1:
                log.warning("grant notices: Redis unreachable (%s); retrying every %.0f s", exc, RETRY_DELAY)
            await asyncio.sleep(RETRY_DELAY)
        finally:
            try:
                await pubsub.aclose()
                await client.aclose()
            except Exception:  # closing a broken connection: nothing to keep
                pass
