"""Counters of one AuthingClient: requests, answers by kind, retries, latencies.

The client's request path bumps the plain attributes directly (no method call per request);
metrics and the run summary read them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from audit_job.models import AnswerKind

LATENCY_SAMPLES = 4096


class ClientStats:
    """Plain counters for one client; read by metrics and the run summary.

    `requests` counts check-session-status requests sent, `token_requests` token fetches;
    `responses` HTTP statuses of answers that arrived; `answers` classified attempts by
    kind; `retries` attempts after a pair's first; `transport_errors` attempts that got no
    answer (timeout, reset, refused, TLS). `latency_samples` keeps the latest attempt
    latencies in seconds; `observe_latency`, when set, is called with each one as well.
    """

    __slots__ = (
        "answers",
        "auth_failures",
        "latency_samples",
        "observe_latency",
        "requests",
        "responses",
        "retries",
        "throttled",
        "token_requests",
        "transport_errors",
    )

    def __init__(self, observe_latency: Callable[[float], None] | None = None) -> None:
        self.requests = 0
        self.token_requests = 0
        self.responses: dict[int, int] = {}
        self.answers: dict[AnswerKind, int] = dict.fromkeys(AnswerKind, 0)
        self.retries = 0
        self.throttled = 0
        self.auth_failures = 0
        self.transport_errors = 0
        self.latency_samples: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.observe_latency = observe_latency

    def count_token_request(self) -> None:
        self.token_requests += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "token_requests": self.token_requests,
            "responses": dict(self.responses),
            "answers": {kind.value: n for kind, n in self.answers.items()},
            "retries": self.retries,
            "throttled": self.throttled,
            "auth_failures": self.auth_failures,
            "transport_errors": self.transport_errors,
        }
