"""What a run is asked to do (RunRequest), what a caller can watch while it goes
(RunHandle), and what it hands back when it ends (RunSummary)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from audit_job.client import ClientStats
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
