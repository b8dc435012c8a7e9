"""What a run is asked to do (RunRequest), what a caller can watch while it goes
(RunHandle), and what it hands back when it ends (RunSummary)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from audit_job.client import ClientStats
from audit_job.config import AuditSettings
from audit_job.inflight_gate import InFlightGate
from audit_job.limiter import AdaptiveRateLimiter
from audit_job.models import RunStatus, RunTrigger
from audit_job.progress_counters import Progress
from audit_job.store.runs import Fence


@dataclass
class RunRequest:
    trigger: RunTrigger = RunTrigger.MANUAL
    app_id: str | None = None
    user_id: str | None = None
    resume_run_id: int | None = None
    join_run_id: int | None = None  # scale-out: help with a live run's pending rows
    scheduled_for: datetime | None = None
    epoch: int | None = None
    fence: Fence | None = None
    # Deliver the feed to the [[sink]] blocks beside the run (the daemon delivers itself).
    deliver: bool = True
    on_commit: Callable[[], None] | None = None  # after each committed batch of answers
    use_learned_rate: bool = True  # False: --no-learned-rate


@dataclass
class PacingSummary:
    """How fast a worker went and with how many requests in flight."""

    concurrency: str  # "auto" or the pinned number
    concurrency_limit: int  # the in-flight limit at the end
    concurrency_peak: int  # the most requests in flight at once
    rate_per_second: float  # the rate limit in force at the end
    server_bounded: bool  # the server's throttling held the rate below the cap
    learned_rate: float | None  # the learned rate the run started at, if any

    @classmethod
    def of(
        cls,
        audit: AuditSettings,
        gate: InFlightGate,
        limiter: AdaptiveRateLimiter,
        learned_rate: float | None,
    ) -> PacingSummary:
        return cls(
            concurrency=str(audit.concurrency),
            concurrency_limit=gate.limit,
            concurrency_peak=gate.peak,
            rate_per_second=limiter.current_rate,
            server_bounded=limiter.server_bounded,
            learned_rate=learned_rate,
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "concurrency": self.concurrency,
            "concurrency_limit": self.concurrency_limit,
            "concurrency_peak": self.concurrency_peak,
            "rate_per_second": round(self.rate_per_second, 1),
            "server_bounded": self.server_bounded,
            "learned_rate_per_second": (
                None if self.learned_rate is None else round(self.learned_rate, 1)
            ),
        }


@dataclass
class RunSummary:
    run_id: int
    status: RunStatus
    counts: dict[str, int]
    duration_seconds: float
    checks_per_second: float
    retries: int
    throttled: int
    latency_ms: dict[str, int | None]
    message: str | None = None
    notices: list[str] = field(default_factory=list)
    # opened / resolved by this run, open in all (None: not read)
    violations: dict[str, int] | None = None
    delivery: list[dict[str, Any]] = field(default_factory=list)  # per sink, when delivering
    pacing: PacingSummary | None = None  # set by the worker that drove it

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class RunHandle:
    """What a caller can watch while the run goes (progress bar, metrics)."""

    run_id: int
    progress: Progress
    stats: ClientStats
    limiter: AdaptiveRateLimiter
    gate: InFlightGate | None = None  # requests in flight and their limit
    learned_rate: float | None = None  # the learned rate it started at, if any
