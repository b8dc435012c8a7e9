"""Per-run, per-app status counts (`audit_run_summary`): written once when a run ends, read
by reports instead of counting the run's checks (a million-row GROUP BY per run shown).

A run's checks change only while it runs, so the counts of an ended run stay true; a run
being resumed loses its rows (store/runs.take_over) and is counted live until it ends again.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Integer, case, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.models import CheckStatus
from audit_job.store.tables import audit_run_summary, session_check

STATUSES = [s.value for s in CheckStatus]
Counts = dict[int, dict[str, dict[str, int]]]  # run -> app -> status -> count


async def write_summary(conn: AsyncConnection, run_id: int) -> None:
    """The run's counts per app, replacing any earlier ones (one scan of its checks)."""
    await clear_summary(conn, run_id)
    columns = [
        func.sum(case((session_check.c.status == s, 1), else_=0)).cast(Integer) for s in STATUSES
    ]
    source = (
        select(session_check.c.run_id, session_check.c.app_id, func.count(), *columns)
        .where(session_check.c.run_id == run_id)
        .group_by(session_check.c.run_id, session_check.c.app_id)
    )
    await conn.execute(
        insert(audit_run_summary).from_select(["run_id", "app_id", "total", *STATUSES], source)
    )


async def checks_of(conn: AsyncConnection, run_id: int) -> int | None:
    """How many checks the ended run holds, from its summary rows (None: it has none)."""
    stmt = select(func.sum(audit_run_summary.c.total)).where(audit_run_summary.c.run_id == run_id)
    total = (await conn.execute(stmt)).scalar_one_or_none()
    return None if total is None else int(total)


async def clear_summary(conn: AsyncConnection, run_id: int) -> None:
    await conn.execute(delete(audit_run_summary).where(audit_run_summary.c.run_id == run_id))


async def read_summaries(conn: AsyncConnection, run_ids: Sequence[int]) -> Counts:
    """{run_id: {app_id: {status: count}}} of the given runs that have a summary."""
    result: Counts = {}
    if not run_ids:
        return result
    table = audit_run_summary
    rows = await conn.execute(
        select(table.c.run_id, table.c.app_id, *(table.c[s] for s in STATUSES)).where(
            table.c.run_id.in_(run_ids)
        )
    )
    for row in rows:
        result.setdefault(row.run_id, {})[row.app_id] = {s: int(row._mapping[s]) for s in STATUSES}
    return result
