"""The write path of answers: one batch of final results into `session_check` and
`session_state`, in the caller's transaction.

Exactly-once rests on two facts: the snapshot holds one `session_check` row per pair
(store/snapshot.py), and a result is written with
`UPDATE .. WHERE id = :id AND status = 'pending'`, so a row turns final once and never
again, whichever worker (or resumed process) answers it.

Values a hostile server sent are bounded (codes) and clipped (texts) to fit the columns.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, bindparam, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.models import CheckResult, CheckStatus
from audit_job.store import bulk
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
    results: Sequence[tuple[int, str, str, CheckResult]],
    *,
    retries: int = 0,
    throttled: int = 0,
) -> None:
    """One batch of final answers, in the caller's transaction."""
    if not results:
        return
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
    # each row made once in the driver's order (bulk.CheckRow, bulk.StateRow).
    stamp = bulk.row_time(conn.dialect.name)
    checks: list[bulk.CheckRow] = []
    states: list[bulk.StateRow] = []
    for row_id, app, user, r in results:
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
        if r.active is not None:
            states.append((app, user, r.active, at, at, run_id))
    if conn.dialect.name in bulk.SUPPORTED:
        await bulk.write_checks(conn, run_id, checks)
        if states:
            await bulk.upsert_states(conn, states)
        return
    names = (
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
    await conn.execute(
        _WRITE_CHECK.where(session_check.c.run_id == run_id),
        [dict(zip(names, row, strict=True)) for row in checks],
    )
    if states:
        columns = ("app_id", "user_id", "active", "checked_at", "changed_at", "run_id")
        await conn.execute(
            upsert_state(session_state, conn.dialect.name),
            [dict(zip(columns, row, strict=True)) for row in states],
        )
