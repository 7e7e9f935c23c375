"""Short-lived tokens: a browser trades a key for one (`POST /api/v1/tokens`) and connects
with `?token=`, so that long-lived keys need not sit in pages.

A token is `mst_` and a value signed with the hub's SECRET_KEY (HMAC-SHA256 through
`django.core.signing`, compared in constant time): the grant id it was minted for and
its expiry. No hub stores it; every hub that shares the SECRET_KEY accepts it until it
expires, and only while the key that minted it is still valid (a revoked key's tokens
die with it, since a token resolves to the key's current grant).
"""

from __future__ import annotations

import time

from django.core import signing

TOKEN_PREFIX = "mst_"
SALT = "marketstream.tokens.v1"
MAX_TOKEN_CHARS = 512  # longer is not ours: refused before any signature work


def mint(grant_id: str, ttl: int, secret: str, now: float | None = None) -> tuple[str, int]:
    """A token for `grant_id` valid for `ttl` seconds; returns it and its expiry (Unix seconds)."""
    expires = int((time.time() if now is None else now) + ttl)
    return TOKEN_PREFIX + signing.dumps({"g": grant_id, "e": expires}, key=secret, salt=SALT), expires


def verify(token: str, secret: str, now: float | None = None) -> str | None:
    """The grant id of a valid, unexpired token; None for anything else (never raises)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
        return None
    try:
        value = signing.loads(token[len(TOKEN_PREFIX) :], key=secret, salt=SALT)
    except (signing.BadSignature, ValueError, UnicodeError):
        return None
    if not isinstance(value, dict):
        return None
    grant_id, expires = value.get("g"), value.get("e")
    if not isinstance(grant_id, str) or not isinstance(expires, int):
        return None
    return grant_id if (time.time() if now is None else now) < expires else None
