"""Retention: which runs' checks may go, and removing them (commands/prune.py drives it):
on PostgreSQL by dropping the run's partition (store/partitions.py), elsewhere by deleting
in batches, one transaction per batch."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.models import RunStatus
from audit_job.store import partitions, run_changes, summary
from audit_job.store.reports import NOT_REAL
from audit_job.store.tables import audit_run, session_check


async def prunable_runs(conn: AsyncConnection, cutoff: datetime) -> list[int]:
    """Runs started before `cutoff`, except the latest real run and any still running."""
    latest = (
        await conn.execute(
            select(func.max(audit_run.c.id)).where(audit_run.c.status.notin_(NOT_REAL))
        )
    ).scalar_one_or_none()
    stmt = select(audit_run.c.id).where(
        audit_run.c.started_at < cutoff, audit_run.c.status != RunStatus.RUNNING.value
    )
    if latest is not None:
        stmt = stmt.where(audit_run.c.id != latest)
    return [row.id for row in await conn.execute(stmt.order_by(audit_run.c.id))]


async def count_checks(conn: AsyncConnection, run_id: int) -> int:
    stmt = select(func.count()).select_from(session_check).where(session_check.c.run_id == run_id)
    return int((await conn.execute(stmt)).scalar_one())


async def delete_checks_batch(conn: AsyncConnection, run_id: int, batch: int) -> int:
    """Delete up to `batch` checks of a run; ids first, so no DELETE .. LIMIT is needed
    (PostgreSQL has none, and MySQL refuses LIMIT in an IN subquery)."""
    ids = [
        row.id
        for row in await conn.execute(
            select(session_check.c.id)
            .where(session_check.c.run_id == run_id)
            .order_by(session_check.c.id)
            .limit(batch)
        )
    ]
    if not ids:
        return 0
    await conn.execute(
        delete(session_check).where(session_check.c.run_id == run_id, session_check.c.id.in_(ids))
    )
    await summary.clear_summary(conn, run_id)
    await run_changes.forget_changes(conn, run_id)
    return len(ids)


async def drop_checks(conn: AsyncConnection, run_id: int) -> int | None:
    """All the run's checks at once, when they have a partition of their own: the number
    dropped, else None (delete them in batches)."""
    # An ended run's summary rows say how many checks it holds (a resumed one has none).
    known = await summary.checks_of(conn, run_id)
    dropped = await partitions.drop_run_partition(conn, run_id, known)
    if dropped is not None:
        await summary.clear_summary(conn, run_id)
        await run_changes.forget_changes(conn, run_id)
    return dropped
