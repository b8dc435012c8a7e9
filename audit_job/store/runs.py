"""Run rows (`audit_run`): create, take over, close; the liveness rule; the lock around
"is a run live? then create one"; the fence type a leader passes to fenced writes.

What a run holds lives beside this module: its snapshot (store/snapshot.py), its workers
and their claims (store/workers.py), and its answers (store/results.py).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.models import CheckStatus, RunStatus
from audit_job.store import events, outbox, run_changes, summary, violation_reads
from audit_job.store.dialect import RUN_CREATION_ROW, lock_named_row
from audit_job.store.tables import audit_run, leader_lease, session_check
from audit_job.store.types import utcnow

HOST = socket.gethostname()
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
    # Its checks change again: counted and compared live until it ends.
    await summary.clear_summary(conn, run_id)
    await run_changes.forget_changes(conn, run_id)


async def status_counts(conn: AsyncConnection, run_id: int) -> dict[str, int]:
    rows = await conn.execute(
        select(session_check.c.status, func.count())
        .where(session_check.c.run_id == run_id)
        .group_by(session_check.c.status)
    )
    counts = {status.value: 0 for status in CheckStatus}
    counts.update({status: int(n) for status, n in rows.all()})
    return counts


# A run whose status becomes one of these has ended: the feed says so (events.run_ended).
ENDED = (RunStatus.SUCCEEDED, RunStatus.COMPLETED_WITH_ERRORS, RunStatus.FAILED)


async def finish_run(
    conn: AsyncConnection,
    run_id: int,
    status: RunStatus,
    message: str | None,
    counts: dict[str, int],
) -> dict[str, int]:
    """Close the run with its final totals (`counts`: status_counts read in this same
    transaction), its per-app counts and its changes for reports, and append
    `run.finished` / `run.failed` in it when this is what ends the run. Whether it is, the
    UPDATE itself says (`status <> :new`, under the row lock it takes): of several
    processes closing one run with the same status, only the first appends the event (a
    failed run that is resumed and finishes ends again, with `run.finished`)."""
    now = utcnow()
    close = (
        update(audit_run)
        .where(audit_run.c.id == run_id)
        .values(
            status=status.value,
            finished_at=now,
            heartbeat_at=now,
            total=sum(counts.values()),
            active=counts["active"],
            inactive=counts["inactive"],
            failed=counts["error"],
            message=message,
        )
    )
    changed = await conn.execute(close.where(audit_run.c.status != status.value))
    ends_now = changed.rowcount == 1
    if not ends_now:
        await conn.execute(close)  # closed with this status already: the totals, again
    # After the UPDATE: the run row's lock makes its closers write these one at a time.
    await summary.write_summary(conn, run_id)
    await run_changes.record_changes(conn, run_id)
    if not ends_now:
        return counts
    if status in ENDED:
        run = audit_run.c
        row = (
            await conn.execute(
                select(run.trigger, run.started_at, run.retries, run.throttled).where(
                    run.id == run_id
                )
            )
        ).one()
        event = events.run_ended(
            run_id=run_id,
            status=status.value,
            trigger=row.trigger,
            started_at=row.started_at,
            finished_at=now,
            counts=counts,
            retries=row.retries,
            throttled=row.throttled,
            message=message,
            open_violations=await violation_reads.count_open(conn),
        )
        await outbox.record_run_end(conn, event)
    return counts


async def mark_interrupted(conn: AsyncConnection, run_id: int, message: str) -> None:
    """Record a dead run honestly (its rows stay pending for a resume)."""
    await conn.execute(
        update(audit_run)
        .where(audit_run.c.id == run_id, audit_run.c.status == RunStatus.RUNNING.value)
        .values(status=RunStatus.INTERRUPTED.value, message=message)
    )


async def note_learned_start(conn: AsyncConnection, run_id: int, rate_per_second: float) -> None:
    """The run started at this learned rate (`audit-job runs` says so)."""
    await conn.execute(
        update(audit_run)
        .where(audit_run.c.id == run_id)
        .values(learned_rate_per_second=round(rate_per_second, 1))
    )
