"""Which runs there are: the run list, and the runs a report refers to (a run by id, the
one before it, the one running at a moment, the newest few for a chart)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.store.reports import NOT_REAL, RUN_COLUMNS
from audit_job.store.tables import audit_run


async def recent_runs(
    conn: AsyncConnection, limit: int, run_id: int | None = None
) -> list[dict[str, Any]]:
    """The newest `limit` runs, skipped and missed slots included, newest first (or the
    one run `run_id`)."""
    names = [name for name in RUN_COLUMNS if name != "duration_seconds"]
    stmt = select(*(audit_run.c[n] for n in names)).order_by(audit_run.c.id.desc()).limit(limit)
    if run_id is not None:
        stmt = stmt.where(audit_run.c.id == run_id)
    rows = []
    for row in (await conn.execute(stmt)).mappings():
        entry = dict(row)
        started, finished = entry["started_at"], entry["finished_at"]
        entry["duration_seconds"] = (
            round((finished - started).total_seconds(), 1) if started and finished else None
        )
        rows.append({name: entry[name] for name in RUN_COLUMNS})
    return rows


async def run_exists(conn: AsyncConnection, run_id: int) -> bool:
    found = await conn.execute(select(audit_run.c.id).where(audit_run.c.id == run_id))
    return found.first() is not None


async def previous_run_id(conn: AsyncConnection, run_id: int) -> int | None:
    """The real run (one with checks) just before `run_id`."""
    stmt = select(func.max(audit_run.c.id)).where(
        audit_run.c.id < run_id, audit_run.c.status.notin_(NOT_REAL)
    )
    return (await conn.execute(stmt)).scalar_one_or_none()


async def run_started_by(conn: AsyncConnection, moment: datetime) -> int | None:
    """The last real run that had started at `moment`: the state as it was then."""
    stmt = select(func.max(audit_run.c.id)).where(
        audit_run.c.started_at <= moment, audit_run.c.status.notin_(NOT_REAL)
    )
    return (await conn.execute(stmt)).scalar_one_or_none()


async def real_run_ids(conn: AsyncConnection, limit: int, upto: int) -> list[int]:
    """The newest `limit` real runs up to run `upto`, oldest first (chart order)."""
    stmt = (
        select(audit_run.c.id)
        .where(audit_run.c.status.notin_(NOT_REAL), audit_run.c.id <= upto)
        .order_by(audit_run.c.id.desc())
        .limit(limit)
    )
    return sorted(row.id for row in await conn.execute(stmt))


async def run_times(conn: AsyncConnection, run_ids: Sequence[int]) -> dict[int, datetime]:
    if not run_ids:
        return {}
    stmt = select(audit_run.c.id, audit_run.c.started_at).where(audit_run.c.id.in_(run_ids))
    return {row.id: row.started_at for row in await conn.execute(stmt)}
