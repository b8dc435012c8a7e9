"""The workers of a run and how they take rows: register, beat, who is alive, claim
pending rows, release them on the way out.

A run's owner and every `audit-job worker --run ID` that joins it is one `audit_worker`
row; its heartbeat (and, for a process of this host, its pid) is the liveness rule of
RunRow.is_dead applied to workers. The claims themselves are store/claims.py.
"""

from __future__ import annotations

import os
from datetime import timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.store import bulk, claims
from audit_job.store.runs import HOST, pid_alive
from audit_job.store.tables import audit_run, audit_worker
from audit_job.store.types import utcnow


async def register_worker(
    conn: AsyncConnection, worker_id: str, run_id: int, concurrency: int
) -> None:
    now = utcnow()
    await conn.execute(
        insert(audit_worker).values(
            worker_id=worker_id,
            run_id=run_id,
            host=HOST,
            pid=os.getpid(),
            started_at=now,
            heartbeat_at=now,
            concurrency=concurrency,
        )
    )


async def beat(conn: AsyncConnection, run_id: int, worker_id: str, *, owner: bool) -> None:
    now = utcnow()
    await conn.execute(
        update(audit_worker).where(audit_worker.c.worker_id == worker_id).values(heartbeat_at=now)
    )
    if owner:
        await conn.execute(
            update(audit_run).where(audit_run.c.id == run_id).values(heartbeat_at=now)
        )


async def live_workers(conn: AsyncConnection, run_id: int, dead_after_seconds: float) -> list[str]:
    """Ids of the run's workers that are alive by the liveness rule (see RunRow.is_dead)."""
    cutoff = utcnow() - timedelta(seconds=dead_after_seconds)
    rows = await conn.execute(
        select(audit_worker.c.worker_id, audit_worker.c.host, audit_worker.c.pid).where(
            audit_worker.c.run_id == run_id, audit_worker.c.heartbeat_at > cutoff
        )
    )
    return [row.worker_id for row in rows if not (row.host == HOST and not pid_alive(row.pid))]


async def unregister_worker(conn: AsyncConnection, run_id: int, worker_id: str) -> None:
    """Release this worker's unanswered claims and forget it."""
    await claims.release(conn, run_id, worker_id)
    await conn.execute(delete(audit_worker).where(audit_worker.c.worker_id == worker_id))


async def claim_pending(
    conn: AsyncConnection,
    run_id: int,
    worker_id: str,
    dead_after_seconds: float,
    limit: int,
    after_id: int = 0,
) -> list[bulk.Claimed]:
    """About `limit` pending rows for this worker, in id order (store/claims.py).

    Liveness is judged inside the claiming transaction: a list of live workers read
    earlier would miss a worker that joined since, whose rows would then be taken over and
    asked twice.

    SQLite has a single writer, so a run there has one worker (`worker --run` needs
    PostgreSQL): its rows are read in id order after `after_id`, with no claims to write."""
    if conn.dialect.name == "sqlite":
        return await bulk.pending_rows(conn, run_id, after_id, limit)
    cutoff = utcnow() - timedelta(seconds=dead_after_seconds)
    registered = await conn.execute(
        select(audit_worker.c.worker_id, audit_worker.c.host, audit_worker.c.pid).where(
            audit_worker.c.run_id == run_id
        )
    )
    dead_here = [r.worker_id for r in registered if r.host == HOST and not pid_alive(r.pid)]
    return await claims.claim(conn, run_id, worker_id, cutoff, dead_here, limit)


async def pending_elsewhere(conn: AsyncConnection, run_id: int, worker_id: str) -> bool:
    """Whether pending rows remain that this worker does not hold. On SQLite the one
    worker holds every pending row of its run."""
    if conn.dialect.name == "sqlite":
        return False
    return await claims.pending_elsewhere(conn, run_id, worker_id)
