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
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.models import CheckResult, CheckStatus, RunStatus
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
    stamp = bulk.sqlite_time if conn.dialect.name == "sqlite" else None
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
