"""Live counters of one worker's share of a run: answers by status, attempts, latencies.

The pipeline adds every result; the progress bar, the run summary and the metrics read them.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from audit_job.models import CheckResult, CheckStatus

LATENCY_SAMPLES = 20_000


@dataclass
class Progress:
    """Live counters for the progress bar, the summary and metrics."""

    total: int = 0
    done_before: int = 0  # answered before this process joined (resume, other workers)
    active: int = 0
    inactive: int = 0
    errors: int = 0
    attempts: int = 0
    throttled: int = 0
    written: int = 0
    started_at: float = field(default_factory=time.monotonic)
    latencies_ms: deque[int] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    @property
    def answered(self) -> int:
        return self.active + self.inactive + self.errors

    @property
    def retries(self) -> int:
        return self.attempts - self.answered

    @property
    def done(self) -> int:
        return self.done_before + self.answered

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started_at
        return self.answered / elapsed if elapsed > 0 else 0.0

    def percentiles_ms(self, *fractions: float) -> list[int | None]:
        """Latency percentiles of the recent answers, one sort for all of them."""
        if not self.latencies_ms:
            return [None] * len(fractions)
        ordered = sorted(self.latencies_ms)
        return [ordered[min(len(ordered) - 1, int(f * len(ordered)))] for f in fractions]

    def add(self, result: CheckResult) -> None:
        status = result.status
        if status is CheckStatus.ACTIVE:
            self.active += 1
        elif status is CheckStatus.INACTIVE:
            self.inactive += 1
        else:
            self.errors += 1
        self.attempts += result.attempts
        self.throttled += result.throttled
        if result.latency_ms is not None:
            self.latencies_ms.append(result.latency_ms)
