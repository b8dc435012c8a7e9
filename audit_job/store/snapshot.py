"""A run's snapshot: one pending `session_check` row per pair, from the enabled targets or
from an external source, then the run's total and `snapshot_at`. Each row keeps the pair's
own expectation as it was when the run started (`expect`: NULL for none, i.e. `any`), so
the writer judges every answer without reading the targets again.

The rows are unique per (app_id, user_id, run_id), so a snapshot taken again (a resume after
a crash mid-snapshot) adds only the pairs still missing.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Integer, String, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.models import Expect
from audit_job.store.dialect import insert_ignore
from audit_job.store.partitions import analyze_run_partition, ensure_run_partition
from audit_job.store.tables import audit_run, audit_target, session_check
from audit_job.store.types import utcnow


async def prepare_snapshot(conn: AsyncConnection, run_id: int) -> None:
    """What must exist before the run's first row: its partition (PostgreSQL)."""
    await ensure_run_partition(conn, run_id)


async def snapshot_targets(
    conn: AsyncConnection,
    run_id: int,
    app_id: str | None,
    user_id: str | None,
    part: tuple[int, int] | None = None,
) -> None:
    """One pending check per enabled target, in a single INSERT .. SELECT (no pairs
    pass through Python, so a million-pair snapshot costs no client memory).

    `part` (PostgreSQL): (i, n) takes only the i-th of n disjoint shares of the targets
    (by a hash of user_id; n a power of two), so that n connections can insert at once."""
    source = select(
        literal(run_id, Integer).label("run_id"),
        audit_target.c.app_id,
        audit_target.c.user_id,
        func.nullif(audit_target.c.expect, literal(Expect.ANY.value, String)).label("expect"),
    ).where(audit_target.c.enabled.is_(True))
    if part is not None:
        index, count = part
        share = func.hashtext(audit_target.c.user_id).op("&")(count - 1)
        source = source.where(share == index)
    if app_id is not None:
        source = source.where(audit_target.c.app_id == app_id)
    if user_id is not None:
        source = source.where(audit_target.c.user_id == user_id)
    existing = select(session_check.c.id).where(
        session_check.c.run_id == run_id,
        session_check.c.app_id == audit_target.c.app_id,
        session_check.c.user_id == audit_target.c.user_id,
    )
    source = source.where(~existing.exists())  # a re-taken snapshot adds only what is missing
    columns = ["run_id", "app_id", "user_id", "expect"]
    await conn.execute(insert(session_check).from_select(columns, source))


async def add_snapshot_rows(
    conn: AsyncConnection, run_id: int, pairs: Sequence[tuple[str, str, str | None]]
) -> None:
    """Pending checks from an external source, (app_id, user_id, its own expectation or
    None); pairs already in the run are skipped."""
    if not pairs:
        return
    stmt = insert_ignore(session_check, conn.dialect.name, ["run_id", "app_id", "user_id"])
    await conn.execute(
        stmt,
        [
            {
                "run_id": run_id,
                "app_id": a,
                "user_id": u,
                "expect": None if e == Expect.ANY.value else e,
                "status": "pending",
                "attempts": 0,
            }
            for a, u, e in pairs
        ],
    )


async def finish_snapshot(conn: AsyncConnection, run_id: int) -> int:
    total = (
        await conn.execute(
            select(func.count()).select_from(session_check).where(session_check.c.run_id == run_id)
        )
    ).scalar_one()
    await conn.execute(
        update(audit_run).where(audit_run.c.id == run_id).values(total=total, snapshot_at=utcnow())
    )
    await analyze_run_partition(conn, run_id)  # before the first answer is written
    return int(total)
