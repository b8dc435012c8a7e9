"""Token bucket for the emulator's rate limit; rate and burst are read live on every take.

`limit_headers` describes the bucket right after a take, for the optional rate-limit headers
(Authing is not known to send any, authing-api-more.md 3):
- Limit: the bucket's size (burst, or max(1, rate)), whole requests;
- Remaining: the whole tokens left after this request;
- Reset: when the bucket is full again: seconds from now (`ietf`, as the IETF draft's
  RateLimit-Reset) or the Unix time in seconds (`x`, as GitHub's X-RateLimit-Reset), rounded
  up. A throttled answer shows Remaining 0; its Retry-After says when one token is back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TokenBucket:
    """Token bucket reading rate and burst live from the options."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens = -1.0
        self._updated = clock()

    def take(self, rate: float, burst: float) -> float:
        """0.0 when a request may pass, else the seconds until the next token."""
        if rate <= 0:
            return 0.0
        capacity = burst if burst > 0 else max(1.0, rate)
        now = self._clock()
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

    def limit_headers(
        self, rate: float, burst: float, style: str, now_epoch: float
    ) -> dict[str, str] | None:
        """The headers for the state left by the last `take` (None without a rate limit)."""
        if rate <= 0 or style == "off":
            return None
        capacity = burst if burst > 0 else max(1.0, rate)
        tokens = max(0.0, self._tokens)
        until_full = max(0.0, capacity - tokens) / rate
        limit, remaining = str(math.floor(capacity)), str(math.floor(tokens))
        if style == "ietf":
            reset = str(math.ceil(until_full))
            return {
                "RateLimit-Limit": limit,
                "RateLimit-Remaining": remaining,
                "RateLimit-Reset": reset,
            }
        reset = str(math.ceil(now_epoch + until_full))
        return {
            "X-RateLimit-Limit": limit,
            "X-RateLimit-Remaining": remaining,
            "X-RateLimit-Reset": reset,
        }
