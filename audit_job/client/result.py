"""A pair's `CheckResult` from its last answer: the status stored, and the message kept
(the server's words) or explained (what happened when there were none)."""

from __future__ import annotations

from datetime import UTC, datetime

from audit_job.models import Answer, AnswerKind, CheckResult, CheckStatus

_FINAL_STATUS = {
    AnswerKind.ACTIVE: CheckStatus.ACTIVE,
    AnswerKind.INACTIVE: CheckStatus.INACTIVE,
    AnswerKind.PERMANENT: CheckStatus.ERROR,
}


def final_result(
    answer: Answer,
    attempts: int,
    latency_seconds: float,
    throttled: int,
    status: CheckStatus | None = None,
) -> CheckResult:
    """The result of a pair whose last answer is `answer`; `status` overrides the one the
    answer's kind implies (a pair still failing after its attempts is an error)."""
    if status is None:
        status = _FINAL_STATUS[answer.kind]
    # A success needs no message ("成功"); errors keep the server's words.
    message = answer.message if status is CheckStatus.ERROR else None
    if status is CheckStatus.ERROR and (answer.http_status is None or message is None):
        message = answer.detail  # no answer, or none with words: say what happened
    return CheckResult(  # positional, in field order: this runs once per pair
        status,
        answer.active,
        datetime.now(UTC),
        attempts,
        answer.http_status,
        answer.status_code,
        answer.api_code,
        message,
        answer.request_id,
        round(latency_seconds * 1000.0),
        throttled,
    )
