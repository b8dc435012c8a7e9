"""Queries on runs and their checks: create, snapshot, claim, write back, finish.

Exactly-once rests on two facts: the snapshot holds one `session_check` row per pair
(unique app_id, user_id, run_id), and a result is written with
`UPDATE .. WHERE id = :id AND status = 'pending'`, so a row turns final once and never
again, whichever worker (or resumed process) answers it.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Integer,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.models import CheckResult, CheckStatus, RunStatus
from audit_job.store import bulk, claims
from audit_job.store.dialect import RUN_CREATION_ROW, lock_named_row, upsert_state
from audit_job.store.tables import (
    MESSAGE_LENGTH,
    REQUEST_ID_LENGTH,
    audit_run,
    audit_target,
    audit_worker,
    leader_lease,
    session_check,
    session_state,
)
from audit_job.store.types import utcnow

HOST = socket.gethostname()
INT64 = 2**63 - 1
INT32 = 2**31 - 1
Fence = Callable[[AsyncConnection], Awaitable[None]]


def owner_tag() -> str:
    return f"{HOST}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_is_dead_here(owner: str | None) -> bool:
    """True when `owner` (host:pid) is a process of this host that no longer exists."""
    if not owner or ":" not in owner:
        return False
    host, _, pid = owner.rpartition(":")
    return host == HOST and pid.isdigit() and not pid_alive(int(pid))


@dataclass(frozen=True)
class RunRow:
    id: int
    trigger: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    heartbeat_at: datetime | None
    owner: str | None
    total: int
    snapshot_at: datetime | None
    epoch: int | None
    scheduled_for: datetime | None
    filters: str | None

    def is_dead(self, now: datetime, dead_after_seconds: float) -> bool:
        """The liveness rule: a `running` run is dead when its heartbeat is older than
        `dead_after_seconds`, or at once when its owner was a process on this host
        that no longer exists."""
        if self.status != RunStatus.RUNNING:
            return False
        if owner_is_dead_here(self.owner):
            return True
        beat = self.heartbeat_at or self.started_at
        return (now - beat).total_seconds() > dead_after_seconds


def _run_row(row: Any) -> RunRow:
    return RunRow(**{field: row._mapping[field] for field in RunRow.__dataclass_fields__})


_RUN_COLUMNS = [audit_run.c[name] for name in RunRow.__dataclass_fields__]


async def lock_run_creation(conn: AsyncConnection) -> None:
    """Serialise "is a run live? then create one" across processes."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(720461)"))
    elif dialect == "sqlite":
        # A write statement takes SQLite's write lock for the rest of the transaction.
        await conn.execute(update(audit_run).where(audit_run.c.id == -1).values(total=0))
    else:  # MySQL/MariaDB: a row lock on a dedicated row of leader_lease
        await lock_named_row(conn, leader_lease, RUN_CREATION_ROW)


async def get_run(conn: AsyncConnection, run_id: int) -> RunRow | None:
    row = (await conn.execute(select(*_RUN_COLUMNS).where(audit_run.c.id == run_id))).first()
    return _run_row(row) if row else None


async def running_runs(conn: AsyncConnection) -> list[RunRow]:
    stmt = select(*_RUN_COLUMNS).where(audit_run.c.status == RunStatus.RUNNING.value)
    return [_run_row(row) for row in (await conn.execute(stmt.order_by(audit_run.c.id)))]


async def latest_run_id(conn: AsyncConnection) -> int | None:
    stmt = select(func.max(audit_run.c.id)).where(
        audit_run.c.status.notin_([RunStatus.SKIPPED_OVERLAP.value, RunStatus.MISSED.value])
    )
    return (await conn.execute(stmt)).scalar_one_or_none()


async def create_run(
    conn: AsyncConnection,
    *,
    trigger: str,
    filters: dict[str, Any] | None = None,
    scheduled_for: datetime | None = None,
    epoch: int | None = None,
) -> int:
    now = utcnow()
    result = await conn.execute(
        insert(audit_run).values(
            trigger=trigger,
            status=RunStatus.RUNNING.value,
            started_at=now,
            heartbeat_at=now,
            owner=owner_tag(),
            filters=json.dumps(filters, ensure_ascii=False) if filters else None,
            scheduled_for=scheduled_for,
            epoch=epoch,
            total=0,
            active=0,
            inactive=0,
            failed=0,
            retries=0,
            throttled=0,
        )
    )
    return int(result.inserted_primary_key[0])


async def take_over(conn: AsyncConnection, run_id: int, epoch: int | None = None) -> None:
    """Make this process the owner of a run being resumed."""
    values: dict[str, Any] = {
        "status": RunStatus.RUNNING.value,
        "owner": owner_tag(),
        "heartbeat_at": utcnow(),
        "finished_at": None,
    }
    if epoch is not None:
        values["epoch"] = epoch
    await conn.execute(update(audit_run).where(audit_run.c.id == run_id).values(**values))


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
    await conn.execute(insert(session_check).from_select(["run_id", "app_id", "user_id"], source))


async def add_snapshot_rows(
    conn: AsyncConnection, run_id: int, pairs: Sequence[tuple[str, str]]
) -> None:
    """Pending checks from an external source; pairs already in the run are skipped."""
    from audit_job.store.dialect import insert_ignore

    if not pairs:
        return
    stmt = insert_ignore(session_check, conn.dialect.name, ["run_id", "app_id", "user_id"])
    await conn.execute(
        stmt,
        [
            {"run_id": run_id, "app_id": a, "user_id": u, "status": "pending", "attempts": 0}
            for a, u in pairs
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
    return int(total)


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
) -> list[tuple[int, str, str]]:
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
        await bulk.write_checks(conn, checks)
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
    await conn.execute(_WRITE_CHECK, [dict(zip(names, row, strict=True)) for row in checks])
    if states:
        columns = ("app_id", "user_id", "active", "checked_at", "changed_at", "run_id")
        await conn.execute(
            upsert_state(session_state, conn.dialect.name),
            [dict(zip(columns, row, strict=True)) for row in states],
        )


async def status_counts(conn: AsyncConnection, run_id: int) -> dict[str, int]:
    rows = await conn.execute(
        select(session_check.c.status, func.count())
        .where(session_check.c.run_id == run_id)
        .group_by(session_check.c.status)
    )
    counts = {status.value: 0 for status in CheckStatus}
    counts.update({status: int(n) for status, n in rows.all()})
    return counts


async def finish_run(
    conn: AsyncConnection,
    run_id: int,
    status: RunStatus,
    message: str | None,
    counts: dict[str, int],
) -> dict[str, int]:
    """Close the run with its final totals (`counts`: status_counts read in this same
    transaction)."""
    await conn.execute(
        update(audit_run)
        .where(audit_run.c.id == run_id)
        .values(
            status=status.value,
            finished_at=utcnow(),
            heartbeat_at=utcnow(),
            total=sum(counts.values()),
            active=counts["active"],
            inactive=counts["inactive"],
            failed=counts["error"],
            message=message,
        )
    )
    return counts


async def mark_interrupted(conn: AsyncConnection, run_id: int, message: str) -> None:
    """Record a dead run honestly (its rows stay pending for a resume)."""
    await conn.execute(
        update(audit_run)
        .where(audit_run.c.id == run_id, audit_run.c.status == RunStatus.RUNNING.value)
        .values(status=RunStatus.INTERRUPTED.value, message=message)
    )
