"""WebSocket close codes the hub uses, in one place (PROTOCOL.md)."""

NORMAL = 1000
POLICY_VIOLATION = 1008  # kept sending requests faster than max_requests_per_s
TOO_BIG = 1009  # a frame larger than max_message_bytes
INTERNAL_ERROR = 1011
SERVICE_RESTART = 1012  # the hub is shutting down: reconnect
TRY_AGAIN_LATER = 1013  # slow client, or the hub is full
