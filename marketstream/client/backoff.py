"""Reconnect delays: exponential backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays before reconnect attempts: `initial` seconds, times `factor` per failed
    attempt, at most `maximum`, each drawn uniformly from [delay/2, delay] so that many
    clients cut off at once do not come back at once ("equal jitter"). A 1012 (the hub
    is restarting) is retried after at most `at_once` seconds, still jittered.

    `reset()` after a connection that worked: the next failure starts from `initial`.
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    at_once: float = 0.1
    attempts: int = 0
    random: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum or self.factor < 1 or self.at_once < 0:
            raise ValueError(
                f"backoff: expected 0 < initial <= maximum, factor >= 1, at_once >= 0; got {self.initial}, "
                f"{self.maximum}, {self.factor}, {self.at_once}"
            )

    def next(self, at_once: bool = False) -> float:
        """The delay before the next attempt, counting this one."""
        if at_once and self.attempts == 0:
            self.attempts = 1
            return self.random.uniform(0, self.at_once)
        delay = min(self.maximum, self.initial * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        return self.random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempts = 0
