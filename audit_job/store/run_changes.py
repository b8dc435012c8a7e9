"""A run's changes against the real run before it, recorded when the run ends, so that
`changes` of a run (the question asked after every run) reads a few rows instead of
comparing two runs of checks pair by pair (at 1,000,000 pairs that comparison, paged in id
order, is a million index probes: seconds).

Recording is one INSERT .. SELECT per side, without order or limit, so the database joins
the two runs in one pass (a hash join on PostgreSQL). The same rules as the live comparison
(store/reports/changes.py) apply; a pair gone is recorded as a candidate, and whether it is
still an enabled target is asked when the changes are read.

The rows stay true as long as neither run's checks change: resuming this run drops them
(store/runs.take_over), and so does the base run ending again (a failed run resumed later)
or either run being pruned; `changes` then compares live.
"""

from __future__ import annotations

from sqlalchemy import Integer, and_, case, delete, func, insert, literal, null, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.store.reports import (
    ACTIVATED,
    DEACTIVATED,
    GONE,
    NEWLY_SEEN,
    NOT_REAL,
    newly_seen_or_flipped,
)
from audit_job.store.tables import audit_run, audit_run_change, session_check

COLUMNS = ["run_id", "check_id", "app_id", "user_id", "change", "from_status", "to_status"]


async def record_changes(conn: AsyncConnection, run_id: int) -> None:
    """Replace the run's recorded changes with its changes against the real run before;
    runs compared with this one drop theirs (this run's checks may differ now)."""
    await forget_changes(conn, run_id)
    base = (
        await conn.execute(
            select(func.max(audit_run.c.id)).where(
                audit_run.c.id < run_id, audit_run.c.status.notin_(NOT_REAL)
            )
        )
    ).scalar_one_or_none()
    if base is None:  # every pair is newly seen: nothing worth keeping
        return
    now, before = session_check.alias("now_check"), session_check.alias("base_check")
    pair = and_(before.c.app_id == now.c.app_id, before.c.user_id == now.c.user_id)
    change = case(
        (before.c.id.is_(None), NEWLY_SEEN), (now.c.active.is_(True), ACTIVATED), else_=DEACTIVATED
    )
    found = (
        select(
            literal(run_id, Integer),
            now.c.id,
            now.c.app_id,
            now.c.user_id,
            change,
            before.c.status,
            now.c.status,
            now.c.checked_at,
        )
        .select_from(now.outerjoin(before, and_(before.c.run_id == base, pair)))
        .where(now.c.run_id == run_id, newly_seen_or_flipped(now, before))
    )
    await conn.execute(insert(audit_run_change).from_select([*COLUMNS, "checked_at"], found))
    gone = (
        select(
            literal(run_id, Integer),
            before.c.id,
            before.c.app_id,
            before.c.user_id,
            literal(GONE),
            before.c.status,
            null(),
        )
        .select_from(before.outerjoin(now, and_(now.c.run_id == run_id, pair)))
        .where(before.c.run_id == base, now.c.id.is_(None))
    )
    await conn.execute(insert(audit_run_change).from_select(COLUMNS, gone))
    await conn.execute(
        update(audit_run).where(audit_run.c.id == run_id).values(changes_base_id=base)
    )


async def forget_changes(conn: AsyncConnection, run_id: int) -> None:
    """Drop what was recorded for run `run_id` and for any run compared with it."""
    compared = select(audit_run.c.id).where(
        or_(audit_run.c.id == run_id, audit_run.c.changes_base_id == run_id)
    )
    ids = [row.id for row in await conn.execute(compared)]
    if not ids:
        return
    await conn.execute(delete(audit_run_change).where(audit_run_change.c.run_id.in_(ids)))
    await conn.execute(
        update(audit_run).where(audit_run.c.id.in_(ids)).values(changes_base_id=None)
    )


async def recorded_base(conn: AsyncConnection, run_id: int) -> int | None:
    """The run that run `run_id`'s recorded changes are against (None: none recorded)."""
    found = await conn.execute(select(audit_run.c.changes_base_id).where(audit_run.c.id == run_id))
    return found.scalar_one_or_none()
