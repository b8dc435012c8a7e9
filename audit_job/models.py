"""Plain values shared by every layer: statuses exactly as stored, pairs, outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple


class CheckStatus(StrEnum):
    """`session_check.status`."""

    PENDING = "pending"
    ACTIVE = "active"
    INACTIVE = "inactive"
    ERROR = "error"


class RunStatus(StrEnum):
    """`audit_run.status`."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    SKIPPED_OVERLAP = "skipped_overlap"
    MISSED = "missed"


class RunTrigger(StrEnum):
    """`audit_run.trigger`."""

    MANUAL = "manual"
    SCHEDULE = "schedule"
    DEMO = "demo"
    REMEDIATION = "remediation"  # the re-check after `audit-job kick --apply`


class AnswerKind(StrEnum):
    """How one attempt was classified (spec section 6)."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    PERMANENT = "permanent"  # per-pair error, never retried
    TRANSIENT = "transient"  # retried
    THROTTLED = "throttled"  # transient; also lowers the adaptive rate
    AUTH = "auth"  # credentials rejected; retried, K in a row stop the run
    FATAL = "fatal"  # retrying cannot help the whole run (e.g. TLS rejected)

    @property
    def is_final(self) -> bool:
        return self in (AnswerKind.ACTIVE, AnswerKind.INACTIVE, AnswerKind.PERMANENT)

    @property
    def is_retryable(self) -> bool:
        return self in (AnswerKind.TRANSIENT, AnswerKind.THROTTLED, AnswerKind.AUTH)


class Pair(NamedTuple):
    app_id: str
    user_id: str


# Answer and CheckResult are made once per request, and a frozen dataclass's __init__ costs
# about three times a plain one's (each field goes through object.__setattr__). They are
# treated as values all the same: nothing assigns to them after construction.


@dataclass(slots=True)
class Answer:
    """One attempt's classified answer. `detail` is a short reason for logs and messages."""

    kind: AnswerKind
    detail: str
    http_status: int | None = None
    status_code: int | None = None
    api_code: int | None = None
    message: str | None = None
    request_id: str | None = None
    retry_after_seconds: float | None = None
    server_date: datetime | None = None

    @property
    def active(self) -> bool | None:
        if self.kind is AnswerKind.ACTIVE:
            return True
        if self.kind is AnswerKind.INACTIVE:
            return False
        return None


@dataclass(slots=True)
class CheckResult:
    """The final answer for one pair, as written to `session_check`."""

    status: CheckStatus
    active: bool | None
    checked_at: datetime
    attempts: int
    http_status: int | None
    status_code: int | None
    api_code: int | None
    message: str | None
    request_id: str | None
    latency_ms: int | None
    throttled: int = 0  # attempts answered with a throttle, for run statistics


class Expect(StrEnum):
    """What a pair's session should be: `audit_target.expect`, a policy's `expect`."""

    ANY = "any"  # no expectation: every answer is fine
    ACTIVE = "active"
    INACTIVE = "inactive"


class Severity(StrEnum):
    """`audit_violation.severity`, from the policy that set the expectation."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class EventType(StrEnum):
    """`audit_event.type`: what the event feed carries (README, "Event feed")."""

    SESSION_ACTIVATED = "session.activated"
    SESSION_DEACTIVATED = "session.deactivated"
    VIOLATION_OPENED = "violation.opened"
    VIOLATION_RESOLVED = "violation.resolved"
    RUN_FINISHED = "run.finished"
    RUN_FAILED = "run.failed"
    SLOT_MISSED = "slot.missed"
    SLOT_SKIPPED = "slot.skipped"
    REMEDIATION_APPLIED = "remediation.applied"
    REMEDIATION_FAILED = "remediation.failed"
