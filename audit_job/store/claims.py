"""Which worker of a shared run asks which pending rows: claims as id ranges.

A claim is one `audit_claim` row, `[first_id, last_id]` of the run's `session_check` ids,
held by one worker; a pending row belongs to the worker whose range covers it. Claiming
writes one small row per claim instead of marking every claimed check (on PostgreSQL each
mark was a new version of the row in every index: ~30 % of the database's work per check).

The rules, each claim a transaction that first locks the run's row (one claimer per run at
a time; claims come a few times a second):
- A worker first takes over ranges whose holder is gone (released, its heartbeat older
  than the cutoff, or a dead process on this host) and returns their pending rows; a range
  with none left is deleted.
- Otherwise it claims the next pending rows after the highest `last_id` of the run.
Ranges never overlap, and every pending row at or below that highest `last_id` lies in a
range, so no row is claimed twice while its holder lives and none is left unclaimed.
SQLite runs have one worker and need none of this (runs.claim_pending).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.models import CheckStatus
from audit_job.store import bulk
from audit_job.store.tables import audit_claim, audit_run, audit_worker, session_check

Rows = list[bulk.Claimed]


async def claim(
    conn: AsyncConnection,
    run_id: int,
    worker_id: str,
    cutoff: datetime,
    dead_here: Sequence[str],
    limit: int,
) -> Rows:
    """Up to about `limit` pending rows for `worker_id` (a taken-over range is returned
    whole, so one claim may exceed `limit` by less than one range)."""
    await conn.execute(select(audit_run.c.id).where(audit_run.c.id == run_id).with_for_update())
    live = select(audit_worker.c.worker_id).where(
        audit_worker.c.run_id == run_id, audit_worker.c.heartbeat_at > cutoff
    )
    holder = audit_claim.c.worker_id
    gone = or_(
        holder.is_(None),
        and_(holder != worker_id, or_(holder.notin_(live), holder.in_(dead_here))),
    )
    rows = await _take_over(conn, run_id, worker_id, gone, limit)
    if rows:
        return rows
    highest = (
        await conn.execute(
            select(func.max(audit_claim.c.last_id)).where(audit_claim.c.run_id == run_id)
        )
    ).scalar()
    rows = await _pending(conn, run_id, int(highest or 0), limit, None)
    if rows:
        await conn.execute(
            insert(audit_claim).values(
                run_id=run_id, worker_id=worker_id, first_id=rows[0][0], last_id=rows[-1][0]
            )
        )
    return rows


async def _take_over(
    conn: AsyncConnection, run_id: int, worker_id: str, gone: ColumnElement[bool], limit: int
) -> Rows:
    ranges = await conn.execute(
        select(audit_claim.c.id, audit_claim.c.first_id, audit_claim.c.last_id)
        .where(audit_claim.c.run_id == run_id, gone)
        .order_by(audit_claim.c.first_id)
    )
    taken: Rows = []
    for claim_id, first_id, last_id in ranges.all():
        rows = await _pending(conn, run_id, first_id - 1, None, last_id)
        if not rows:  # answered in full: nothing to hand over
            await conn.execute(delete(audit_claim).where(audit_claim.c.id == claim_id))
            continue
        await conn.execute(
            update(audit_claim).where(audit_claim.c.id == claim_id).values(worker_id=worker_id)
        )
        taken += rows
        if len(taken) >= limit:
            break
    return taken


async def _pending(
    conn: AsyncConnection, run_id: int, after_id: int, limit: int | None, upto_id: int | None
) -> Rows:
    if conn.dialect.name in bulk.SUPPORTED:
        return await bulk.pending_rows(conn, run_id, after_id, limit, upto_id)
    stmt = select(
        session_check.c.id, session_check.c.app_id, session_check.c.user_id, session_check.c.expect
    ).where(
        session_check.c.run_id == run_id,
        session_check.c.status == CheckStatus.PENDING.value,
        session_check.c.id > after_id,
    )
    if upto_id is not None:
        stmt = stmt.where(session_check.c.id <= upto_id)
    stmt = stmt.order_by(session_check.c.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [(row.id, row.app_id, row.user_id, row.expect) for row in await conn.execute(stmt)]


async def release(conn: AsyncConnection, run_id: int, worker_id: str) -> None:
    """A leaving worker's ranges become free for any other worker to take over."""
    await conn.execute(
        update(audit_claim)
        .where(audit_claim.c.run_id == run_id, audit_claim.c.worker_id == worker_id)
        .values(worker_id=None)
    )


async def pending_elsewhere(conn: AsyncConnection, run_id: int, worker_id: str) -> bool:
    """Whether the run has pending rows outside this worker's ranges (held by another
    worker, which may still answer them or die and leave them to be taken over)."""
    mine = exists().where(
        audit_claim.c.run_id == run_id,
        audit_claim.c.worker_id == worker_id,
        session_check.c.id.between(audit_claim.c.first_id, audit_claim.c.last_id),
    )
    stmt = (
        select(session_check.c.id)
        .where(
            session_check.c.run_id == run_id,
            session_check.c.status == CheckStatus.PENDING.value,
            ~mine,
        )
        .limit(1)
    )
    return (await conn.execute(stmt)).first() is not None
