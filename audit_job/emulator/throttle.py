"""Token bucket for the emulator's rate limit; rate and burst are read live on every take."""

from __future__ import annotations

import time


class TokenBucket:
    """Token bucket reading rate and burst live from the options."""

    def __init__(self) -> None:
        self._tokens = -1.0
        self._updated = time.monotonic()

    def take(self, rate: float, burst: float) -> float:
        """0.0 when a request may pass, else the seconds until the next token."""
        if rate <= 0:
            return 0.0
        capacity = burst if burst > 0 else max(1.0, rate)
        now = time.monotonic()
        if self._tokens < 0:
            self._tokens = capacity
        else:
            self._tokens = min(capacity, self._tokens + (now - self._updated) * rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / rate

    def refill(self) -> None:
        self._tokens = -1.0
