"""WebSocket close codes the hub uses, in one place (PROTOCOL.md, "Close codes")."""

from __future__ import annotations

from enum import IntEnum


class Close(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001  # the peer left: nothing is sent, the connection is only forgotten
    POLICY_VIOLATION = 1008  # kept sending requests faster than max_requests_per_s
    TOO_BIG = 1009  # a frame larger than max_message_bytes
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # the hub is shutting down: reconnect
    TRY_AGAIN_LATER = 1013  # slow client, or the hub is full
    KEY_OVER_LIMIT = 4001  # the key is over its connection limit (max_connections across hubs)
    KEY_REVOKED = 4003  # the key (or the session's grant) was revoked, disabled or expired
