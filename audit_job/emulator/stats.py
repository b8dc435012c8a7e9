"""Counters the emulator keeps per request; cheap enough for thousands of requests a second."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

PAIR_SEPARATOR = "\t"


class Stats:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        self.requests_total = 0
        self.check_requests = 0
        self.token_requests = 0
        self.tokens_issued = 0
        self.per_pair: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        self.throttled = 0
        self.faults: Counter[str] = Counter()
        self.auth_failures = 0
        self.auth_failures_by_reason: Counter[str] = Counter()
        self.max_per_second = 0
        self._window: deque[float] = deque()
        # In-flight requests survive a reset; only the high-water mark starts over.
        self.in_flight = getattr(self, "in_flight", 0)
        self.max_in_flight = self.in_flight

    def arrive(self) -> None:
        """One API request started (accepted or not)."""
        self.requests_total += 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        # Arrivals in (now - 1 s, now]; its maximum over arrivals equals the maximum over all
        # windows [t, t + 1 s), since the busiest such window may start at an arrival.
        now = self._clock()
        window = self._window
        horizon = now - 1.0
        while window and window[0] <= horizon:
            window.popleft()
        window.append(now)
        if len(window) > self.max_per_second:
            self.max_per_second = len(window)

    def leave(self) -> None:
        self.in_flight -= 1

    def pair(self, app_id: str, user_id: str) -> None:
        self.per_pair[f"{app_id}{PAIR_SEPARATOR}{user_id}"] += 1

    def auth_failed(self, reason: str) -> None:
        self.auth_failures += 1
        self.auth_failures_by_reason[reason] += 1
        self.answers["auth_failed"] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests_total": self.requests_total,
            "check_requests": self.check_requests,
            "token_requests": self.token_requests,
            "tokens_issued": self.tokens_issued,
            "per_pair": dict(self.per_pair),
            "answers": dict(self.answers),
            "throttled": self.throttled,
            "faults": dict(self.faults),
            "auth_failures": self.auth_failures,
            "auth_failures_by_reason": dict(self.auth_failures_by_reason),
            "max_per_second": self.max_per_second,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }
