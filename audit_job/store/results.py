"""The write path of answers: one batch of final results into `session_check`, the event
feed and violations (store/outbox.py), and `session_state`, in the caller's transaction.

Exactly-once rests on two facts: the snapshot holds one `session_check` row per pair
(store/snapshot.py), and a result is written with
`UPDATE .. WHERE id = :id AND status = 'pending'`, so a row turns final once and never
again, whichever worker (or resumed process) answers it. Only the rows the batch turned
final go on: to the feed (a replayed batch, or a row another worker answered, emits
nothing) and to session_state (which holds what session_check holds).

Values a hostile server sent are bounded (codes) and clipped (texts) to fit the columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.models import CheckResult, CheckStatus
from audit_job.policy import PolicySet
from audit_job.store import bulk, outbox, violations
from audit_job.store.dialect import upsert_state
from audit_job.store.tables import (
    MESSAGE_LENGTH,
    REQUEST_ID_LENGTH,
    audit_run,
    session_check,
    session_state,
)
from audit_job.store.types import utcnow

INT64 = 2**63 - 1
INT32 = 2**31 - 1

# One answer of a batch: (session_check id, app_id, user_id, the answer, the pair's own
# expectation from the snapshot: None when it has none).
ResultRow = tuple[int, str, str, CheckResult, str | None]


@dataclass(frozen=True)
class Judging:
    """How a run's writer judges its answers against expectations (store/violations.py).

    `own_source`: what a pair's own expectation is called (`target`, or `source` for a
    `[source] query` run). `maybe_open`: whether a violation was open when the run started
    (violations.judge); True is always safe. `resolution`: what resolves a violation
    (`recheck` after a kick)."""

    policies: PolicySet = field(default_factory=PolicySet)
    own_source: str = "target"
    maybe_open: bool = True
    resolution: str = violations.RESOLVED_BY_CHECK


def _bounded(value: int | None, limit: int) -> int | None:
    """Garbage codes from a hostile server must not break the batch insert."""
    return value if value is None or -limit <= value <= limit else None


def _clip(value: str | None, length: int) -> str | None:
    return value if value is None or len(value) <= length else value[: length - 1] + "…"


_WRITE_CHECK = (
    update(session_check)
    .where(
        and_(
            session_check.c.id == bindparam("b_id"),
            session_check.c.status == CheckStatus.PENDING.value,
        )
    )
    .values(
        status=bindparam("b_status"),
        active=bindparam("b_active"),
        checked_at=bindparam("b_checked_at"),
        attempts=bindparam("b_attempts"),
        http_status=bindparam("b_http_status"),
        status_code=bindparam("b_status_code"),
        api_code=bindparam("b_api_code"),
        message=bindparam("b_message"),
        request_id=bindparam("b_request_id"),
        latency_ms=bindparam("b_latency_ms"),
    )
)


async def write_results(
    conn: AsyncConnection,
    run_id: int,
    results: Sequence[ResultRow],
    *,
    retries: int = 0,
    throttled: int = 0,
    judging: Judging | None = None,
) -> int:
    """One batch of final answers, in the caller's transaction; the number of events it
    appended."""
    if not results:
        return 0
    # First through SQLAlchemy: it also opens the transaction the bulk statements join.
    await conn.execute(
        update(audit_run)
        .where(audit_run.c.id == run_id)
        .values(
            retries=audit_run.c.retries + retries,
            throttled=audit_run.c.throttled + throttled,
            heartbeat_at=utcnow(),
        )
    )
    # One pass, one timestamp text per row on SQLite (formatting is most of a row's cost),
    # each row made once in the driver's order (bulk.CheckRow).
    stamp = bulk.row_time(conn.dialect.name)
    checks: list[bulk.CheckRow] = []
    for row_id, _app, _user, r, _expect in results:
        at = r.checked_at if stamp is None else stamp(r.checked_at)
        checks.append(
            (
                r.status.value,
                r.active,
                at,
                r.attempts,
                _bounded(r.http_status, INT32),
                _bounded(r.status_code, INT32),
                _bounded(r.api_code, INT64),
                _clip(r.message, MESSAGE_LENGTH),
                _clip(r.request_id, REQUEST_ID_LENGTH),
                r.latency_ms,
                row_id,
            )
        )
    bulk_path = conn.dialect.name in bulk.SUPPORTED
    final = (
        await bulk.write_checks(conn, run_id, checks)
        if bulk_path
        else await _write_core(conn, run_id, checks)
    )
    if not final:
        return 0
    conclusive: list[ResultRow] = []
    states: list[bulk.StateRow] = []
    for row, check in zip(results, checks, strict=True):
        if row[3].active is not None and row[0] in final:
            conclusive.append(row)
            states.append((row[1], row[2], bool(row[3].active), check[2], check[2], run_id))
    # The feed compares with session_state as it was before this batch: first.
    judging = judging or Judging()
    appended = await outbox.record_answers(
        conn,
        judged(run_id, conclusive, judging),
        maybe_open=judging.maybe_open,
        resolution=judging.resolution,
    )
    if states:
        if bulk_path:
            await bulk.upsert_states(conn, states)
        else:
            columns = ("app_id", "user_id", "active", "checked_at", "changed_at", "run_id")
            await conn.execute(
                upsert_state(session_state, conn.dialect.name),
                [dict(zip(columns, row, strict=True)) for row in states],
            )
    return appended


def judged(
    run_id: int, rows: Sequence[ResultRow], judging: Judging
) -> list[violations.JudgedAnswer]:
    """The answers with each pair's effective expectation (policy.py)."""
    effective = judging.policies.effective
    source = judging.own_source
    answers = []
    for _id, app, user, r, expect in rows:
        e = effective(app, user, expect, source)
        answers.append(
            violations.JudgedAnswer(
                app, user, r.active, r.checked_at, run_id, e.expect, e.severity, e.source
            )
        )
    return answers


_NAMES = (
    "b_status",
    "b_active",
    "b_checked_at",
    "b_attempts",
    "b_http_status",
    "b_status_code",
    "b_api_code",
    "b_message",
    "b_request_id",
    "b_latency_ms",
    "b_id",
)


async def _write_core(conn: AsyncConnection, run_id: int, checks: list[bulk.CheckRow]) -> set[int]:
    """Other dialects: the still-pending rows locked and read first, then the UPDATE."""
    ids = [row[10] for row in checks]
    stmt = (
        select(session_check.c.id)
        .where(
            session_check.c.run_id == run_id,
            session_check.c.id.in_(ids),
            session_check.c.status == CheckStatus.PENDING.value,
        )
        .with_for_update()
    )
    final = {int(r[0]) for r in await conn.execute(stmt)}
    if final:
        await conn.execute(
            _WRITE_CHECK.where(session_check.c.run_id == run_id),
            [dict(zip(_NAMES, row, strict=True)) for row in checks],
        )
    return final
