"""Counters the emulator keeps per request; cheap enough for thousands of requests a second.

Latency (arrival at the handler to the answer, as the emulator sees it) goes into a log-scale
histogram (2 % wide buckets), so percentiles cost constant memory however long a run lasts.
Requests answered 429 by the throttle, reset or hung up are not in it.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

PAIR_SEPARATOR = "\t"
_LATENCY_FLOOR = 1e-5  # seconds; faster answers share the first bucket
_LATENCY_RATIO = 1.02
_LATENCY_BUCKETS = 1200  # up to ~2e5 s
_LOG_RATIO = math.log(_LATENCY_RATIO)


class LatencyHistogram:
    def __init__(self) -> None:
        self.counts = [0] * _LATENCY_BUCKETS
        self.count = 0
        self.total = 0.0
        self.low = math.inf
        self.high = 0.0

    def add(self, seconds: float) -> None:
        if seconds <= _LATENCY_FLOOR:
            bucket = 0
        else:
            bucket = min(
                int(math.log(seconds / _LATENCY_FLOOR) / _LOG_RATIO) + 1, _LATENCY_BUCKETS - 1
            )
        self.counts[bucket] += 1
        self.count += 1
        self.total += seconds
        self.low = min(self.low, seconds)
        self.high = max(self.high, seconds)

    def quantile(self, q: float) -> float | None:
        """The q-quantile within 2 % (the geometric middle of its bucket, kept in [min, max])."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for bucket, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                if bucket == 0:
                    value = _LATENCY_FLOOR
                else:
                    value = _LATENCY_FLOOR * _LATENCY_RATIO ** (bucket - 0.5)
                return min(max(value, self.low), self.high)
        return self.high

    def summary_ms(self) -> dict[str, float | int | None]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "count": self.count,
            "mean": ms(self.total / self.count) if self.count else None,
            "p50": ms(self.quantile(0.5)),
            "p90": ms(self.quantile(0.9)),
            "p99": ms(self.quantile(0.99)),
            "max": ms(self.high) if self.count else None,
        }


class Stats:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        self.requests_total = 0
        self.check_requests = 0
        self.token_requests = 0
        self.tokens_issued = 0
        self.requests_by_endpoint: Counter[str] = Counter()
        self.per_pair: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        self.throttled = 0
        self.faults: Counter[str] = Counter()
        self.auth_failures = 0
        self.auth_failures_by_reason: Counter[str] = Counter()
        self.kicks_per_user: Counter[str] = Counter()
        self.kick_failures_per_user: Counter[str] = Counter()
        self.max_per_second = 0
        self._window: deque[float] = deque()
        # Whole seconds since the reset: [requests, of which throttled] (benchmarks, tests).
        self._started_at = self._clock()
        self.seconds: list[list[int]] = []
        self.latency = LatencyHistogram()
        # Requests in flight, queued or being served survive a reset; their peaks start over.
        self.in_flight = getattr(self, "in_flight", 0)
        self.max_in_flight = self.in_flight
        self.queued = getattr(self, "queued", 0)
        self.max_queued = self.queued
        self.serving = getattr(self, "serving", 0)
        self.max_serving = self.serving

    def arrive(self) -> float:
        """One API request started (accepted or not); returns its arrival time."""
        self.requests_total += 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        # Arrivals in (now - 1 s, now]; its maximum over arrivals equals the maximum over all
        # windows [t, t + 1 s), since the busiest such window may start at an arrival.
        now = self._clock()
        window = self._window
        # `start + 1.0 <= now` rather than `start <= now - 1.0`: the two differ by a rounding
        # at the window's edge, and this one is the window's own definition.
        while window and window[0] + 1.0 <= now:
            window.popleft()
        window.append(now)
        if len(window) > self.max_per_second:
            self.max_per_second = len(window)
        self._second(now)[0] += 1
        return now

    def throttle(self) -> None:
        """The request that just arrived was answered 429 by the throttle."""
        self.throttled += 1
        self.answers["throttled"] += 1
        self._second(self._clock())[1] += 1

    def _second(self, now: float) -> list[int]:
        index = max(0, int(now - self._started_at))  # a test clock may start before it
        seconds = self.seconds
        while len(seconds) <= index:
            seconds.append([0, 0])
        return seconds[index]

    def leave(self, arrived_at: float | None = None) -> None:
        """The request is done; with its arrival time, its latency is recorded."""
        self.in_flight -= 1
        if arrived_at is not None:
            self.latency.add(self._clock() - arrived_at)

    def enqueue(self) -> None:
        self.queued += 1
        if self.queued > self.max_queued:
            self.max_queued = self.queued

    def dequeue(self) -> None:
        self.queued -= 1

    def serve(self) -> None:
        self.serving += 1
        if self.serving > self.max_serving:
            self.max_serving = self.serving

    def served(self) -> None:
        self.serving -= 1

    def endpoint(self, name: str) -> None:
        self.requests_by_endpoint[name] += 1

    def pair(self, app_id: str, user_id: str) -> None:
        self.per_pair[f"{app_id}{PAIR_SEPARATOR}{user_id}"] += 1

    def auth_failed(self, reason: str) -> None:
        self.auth_failures += 1
        self.auth_failures_by_reason[reason] += 1
        self.answers["auth_failed"] += 1

    def kicked(self, user_id: str) -> None:
        self.kicks_per_user[user_id] += 1
        self.answers["kicked"] += 1

    def kick_failed(self, user_id: str) -> None:
        self.kick_failures_per_user[user_id] += 1
        self.answers["kick_failed"] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests_total": self.requests_total,
            "check_requests": self.check_requests,
            "token_requests": self.token_requests,
            "tokens_issued": self.tokens_issued,
            "requests_by_endpoint": dict(self.requests_by_endpoint),
            "per_pair": dict(self.per_pair),
            "answers": dict(self.answers),
            "throttled": self.throttled,
            "faults": dict(self.faults),
            "auth_failures": self.auth_failures,
            "auth_failures_by_reason": dict(self.auth_failures_by_reason),
            "kicks_per_user": dict(self.kicks_per_user),
            "kick_failures_per_user": dict(self.kick_failures_per_user),
            "max_per_second": self.max_per_second,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "queued": self.queued,
            "max_queued": self.max_queued,
            "serving": self.serving,
            "max_serving": self.max_serving,
            "latency_ms": self.latency.summary_ms(),
            "per_second": [[n - throttled, throttled] for n, throttled in self.seconds],
        }
