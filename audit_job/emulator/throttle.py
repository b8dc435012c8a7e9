"""Token bucket for the emulator's rate limit; rate and burst are read live on every take.

`limit_headers` describes the bucket right after a take, for the optional rate-limit headers
(Authing is not known to send any, authing-api-more.md 3), as a quota over the next whole
second, which is what the headers can say truthfully of a token bucket:
- Reset: the end of that window: 1 second from now (`ietf`, delta-seconds as the IETF
  draft's RateLimit-Reset) or the next Unix second but one (`x`, a Unix time as GitHub's
  X-RateLimit-Reset; 1 to 2 s away);
- Remaining: what the bucket accepts until then, sent as its tokens come: the whole tokens
  left after this request plus the refill until the reset;
- Limit: the same for a full bucket over one second (its size plus one second of refill).
Paced at Remaining / Reset, a client sends what the bucket lets through and no more. (An
earlier "Remaining 0 until the bucket is full again" told a client to wait up to a second
when a token was due every few milliseconds.)
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
        limit = str(math.floor(capacity + rate))
        if style == "ietf":
            return {
                "RateLimit-Limit": limit,
                "RateLimit-Remaining": _whole(tokens + rate),
                "RateLimit-Reset": "1",
            }
        reset = math.floor(now_epoch) + 2
        return {
            "X-RateLimit-Limit": limit,
            "X-RateLimit-Remaining": _whole(tokens + rate * (reset - now_epoch)),
            "X-RateLimit-Reset": str(reset),
        }


def _whole(requests: float) -> str:
    # Rounding slack: 10/s over 1002 - 1000.2 s is 18 requests, not 17.99999.
    return str(math.floor(requests + 1e-6))
