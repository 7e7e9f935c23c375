"""The limits of a connection: announced in `welcome` and enforced by the core."""

from __future__ import annotations

from dataclasses import dataclass

THROTTLE_STEP_MS = 10  # throttles are rounded up to this step: each distinct value costs the hub a timer


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may do (PROTOCOL.md, `welcome.limits`).

    With `max_recovery` 0 only a client that missed nothing recovers.
    `max_pending` is not announced: it bounds the connection's outbox (past it, the
    outbox conflates).
    """

    max_subscriptions: int = 1000
    max_message_bytes: int = 65536
    max_requests_per_s: int = 50
    min_throttle_ms: int = 0
    max_throttle_ms: int = 60000
    max_pending: int = 1000
    max_recovery: int = 2000  # ticks one symbol's recovery may deliver (no more than history keeps)

    def __post_init__(self) -> None:
        for name in ("max_subscriptions", "max_message_bytes", "max_requests_per_s", "max_pending"):
            if getattr(self, name) < 1:
                raise ValueError(f"limit {name} must be >= 1, got {getattr(self, name)}")
        if self.max_recovery < 0:
            raise ValueError(f"limit max_recovery must be >= 0, got {self.max_recovery}")
        if not 0 <= self.min_throttle_ms <= self.max_throttle_ms:
            raise ValueError(
                f"throttle limits must satisfy 0 <= min <= max, got {self.min_throttle_ms}..{self.max_throttle_ms}"
            )

    def announced(self) -> dict[str, int]:
        """The limits as `welcome` carries them."""
        return {
            "max_subscriptions": self.max_subscriptions,
            "max_message_bytes": self.max_message_bytes,
            "max_requests_per_s": self.max_requests_per_s,
            "min_throttle_ms": self.min_throttle_ms,
            "max_throttle_ms": self.max_throttle_ms,
            "max_recovery": self.max_recovery,
        }

    def throttle(self, requested: int | None) -> int:
        """The effective throttle of a request: None means every tick; rounded up to a
        multiple of THROTTLE_STEP_MS, then clamped to `min_throttle_ms..max_throttle_ms`."""
        value = max(0, 0 if requested is None else requested)
        value = -(-value // THROTTLE_STEP_MS) * THROTTLE_STEP_MS
        return max(self.min_throttle_ms, min(self.max_throttle_ms, value))
