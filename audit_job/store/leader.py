"""The daemon's leader lease, its fence, and the rows that account for schedule slots.

One row of `leader_lease` (name `daemon`) says who leads and in which epoch:

    take_or_renew:  SELECT .. FOR UPDATE the row, then
                    - no row yet            -> insert it, epoch 1, this node leads
                    - ours, same epoch      -> push expires_at forward (renew)
                    - expired or released   -> owner = us, epoch + 1 (takeover)
                    - someone else's, live  -> not leader
    fence:          SELECT epoch .. FOR SHARE inside a batch's own transaction; a newer
                    epoch raises FencedOut and the whole batch rolls back.

Expiry is compared with the database's clock (`now()`, on MySQL `UTC_TIMESTAMP(6)`), never
the hosts', so skewed clocks cannot make two nodes both see a live lease as theirs. A
takeover waits on the share lock of any batch being written under the old epoch, and every
later batch of the old leader sees the new epoch: the old leader writes nothing more.
"""

from __future__ import annotations

import fcntl
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.errors import FencedOut, RunConflict
from audit_job.models import RunStatus, RunTrigger
from audit_job.store import dialect, events, evidence, outbox
from audit_job.store.dialect import insert_ignore
from audit_job.store.runs import Fence, owner_tag
from audit_job.store.tables import audit_run, leader_lease
from audit_job.store.types import utcnow

LEASE_NAME = "daemon"
FROZEN_WRITER_MS = 2000  # adds at most this to the takeover bound


@dataclass(frozen=True)
class Lease:
    owner: str | None
    epoch: int
    expires_at: datetime | None


def _db_now(conn: AsyncConnection) -> Any:
    # The server's clock, shared by every node (SQLite: this host's; it has one anyway).
    return dialect.server_now(conn.dialect.name)


async def read_lease(conn: AsyncConnection) -> Lease | None:
    row = (
        await conn.execute(
            select(leader_lease.c.owner, leader_lease.c.epoch, leader_lease.c.expires_at).where(
                leader_lease.c.name == LEASE_NAME
            )
        )
    ).first()
    return Lease(row.owner, int(row.epoch), row.expires_at) if row else None


async def take_or_renew(
    conn: AsyncConnection,
    node: str,
    epoch: int | None,
    lease_seconds: float,
    *,
    force: bool = False,
) -> int | None:
    """Lead (return the epoch) or not (None), in the caller's transaction.

    `epoch` is the one this node believes it holds (None when it does not lead): a node
    renews only the exact epoch it holds, so a node that lost the lease and finds it
    expired again takes over with a new epoch instead of silently resuming the old one.
    `force` takes over a live lease (SQLite, where the lock file already excludes others)."""
    now = _db_now(conn)
    until = dialect.later(now, lease_seconds, conn.dialect.name)
    c = leader_lease.c
    locked = (
        select(c.owner, c.epoch, (c.expires_at.is_(None) | (c.expires_at <= now)).label("expired"))
        .where(c.name == LEASE_NAME)
        .with_for_update()
    )
    row = (await conn.execute(locked)).first()
    if row is None:
        inserted = await conn.execute(
            insert_ignore(leader_lease, conn.dialect.name, ["name"]).values(
                name=LEASE_NAME, owner=node, epoch=1, expires_at=until, renewed_at=now
            )
        )
        return 1 if inserted.rowcount == 1 else None
    current, expired = int(row.epoch), bool(row.expired)
    if row.owner == node and epoch == current and (force or not expired):
        await conn.execute(
            update(leader_lease)
            .where(leader_lease.c.name == LEASE_NAME)
            .values(expires_at=until, renewed_at=now)
        )
        return current
    if row.owner is None or expired or force:
        await conn.execute(
            update(leader_lease)
            .where(leader_lease.c.name == LEASE_NAME)
            .values(owner=node, epoch=current + 1, expires_at=until, renewed_at=now)
        )
        return current + 1
    return None


async def release(conn: AsyncConnection, node: str, epoch: int) -> None:
    """Give the lease up at once (clean stop), so a follower need not wait for expiry."""
    await conn.execute(
        update(leader_lease)
        .where(
            leader_lease.c.name == LEASE_NAME,
            leader_lease.c.owner == node,
            leader_lease.c.epoch == epoch,
        )
        .values(owner=None, expires_at=None)
    )


async def check_fence(conn: AsyncConnection, epoch: int) -> None:
    """Raise FencedOut unless `epoch` is still the current one; holds a share lock on
    the lease row until the caller's transaction ends, so no takeover slips in between."""
    stmt = select(leader_lease.c.epoch).where(leader_lease.c.name == LEASE_NAME)
    if dialect.has_row_locks(conn.dialect.name):
        # A writer frozen (SIGSTOP, GC pause) inside this transaction would hold the share
        # lock, and so block every takeover, for as long as it sleeps: the server ends
        # such a session once it idles in the transaction past this bound.
        await dialect.bound_frozen_writer(conn, FROZEN_WRITER_MS)
        stmt = stmt.with_for_update(read=True)
    current = (await conn.execute(stmt)).scalar_one_or_none()
    if current is None or int(current) != epoch:
        raise FencedOut(
            f"leadership epoch {epoch} is over (the lease is at epoch {current}); "
            "this node writes nothing more"
        )


def fence_for(epoch: int) -> Fence:
    async def fence(conn: AsyncConnection) -> None:
        await check_fence(conn, epoch)

    return fence


# -- schedule slots ------------------------------------------------------------------------


async def last_slot(conn: AsyncConnection) -> datetime | None:
    """The latest schedule slot any row accounts for (run, skipped or missed)."""
    return (await conn.execute(select(func.max(audit_run.c.scheduled_for)))).scalar_one_or_none()


async def record_slot(
    conn: AsyncConnection,
    slot: datetime,
    status: RunStatus,
    message: str,
    *,
    epoch: int | None,
    missed: tuple[datetime, datetime, int] | None = None,
) -> bool:
    """Account for a slot that runs no audit (`skipped_overlap`, `missed`); False when
    a row for the slot exists already (another node accounted for it)."""
    now = utcnow()
    values: dict[str, Any] = {
        "trigger": RunTrigger.SCHEDULE.value,
        "status": status.value,
        "started_at": now,
        "finished_at": now,
        "heartbeat_at": now,
        "owner": owner_tag(),
        "message": message,
        "scheduled_for": slot,
        "epoch": epoch,
        "total": 0,
        "active": 0,
        "inactive": 0,
        "failed": 0,
        "retries": 0,
        "throttled": 0,
    }
    if missed is not None:
        values["missed_first"], values["missed_last"], values["missed_count"] = missed
    stmt = insert_ignore(audit_run, conn.dialect.name, ["scheduled_for"]).values(**values)
    if (await conn.execute(stmt)).rowcount != 1:
        return False
    # Slot rows are final: they join the hash chain, so the schedule's record is
    # tamper-evident too (store/evidence.py).
    run_id = (
        await conn.execute(select(audit_run.c.id).where(audit_run.c.scheduled_for == slot))
    ).scalar_one()
    await evidence.seal_run(conn, run_id)
    await outbox.record_events(
        conn, [await _slot_event(conn, run_id, slot, status, message, missed)]
    )
    return True


async def _slot_event(
    conn: AsyncConnection,
    run_id: int,
    slot: datetime,
    status: RunStatus,
    message: str,
    missed: tuple[datetime, datetime, int] | None,
) -> events.NewEvent:
    """`slot.missed` / `slot.skipped` for a slot row, appended in the transaction that
    writes it (so exactly when the row exists)."""
    if status is RunStatus.MISSED:
        first, last, count = missed if missed is not None else (slot, slot, 1)
        return events.slot_missed(
            run_id=run_id, first=first, last=last, count=count, message=message
        )
    running = (
        await conn.execute(
            select(func.min(audit_run.c.id)).where(audit_run.c.status == RunStatus.RUNNING.value)
        )
    ).scalar_one_or_none()
    return events.slot_skipped(
        run_id=run_id, scheduled_for=slot, message=message, running_run_id=running
    )


async def interrupt_superseded(conn: AsyncConnection, epoch: int) -> list[int]:
    """Mark `running` runs started under an older epoch interrupted: their leader is
    fenced out, so they cannot write any more and are safe to resume at once (without
    waiting for their heartbeat to go stale)."""
    rows = await conn.execute(
        select(audit_run.c.id, audit_run.c.epoch).where(
            audit_run.c.status == RunStatus.RUNNING.value,
            audit_run.c.epoch.is_not(None),
            audit_run.c.epoch < epoch,
        )
    )
    stale = [(int(r.id), int(r.epoch)) for r in rows]
    for run_id, old in stale:
        await conn.execute(
            update(audit_run)
            .where(audit_run.c.id == run_id, audit_run.c.status == RunStatus.RUNNING.value)
            .values(
                status=RunStatus.INTERRUPTED.value,
                message=f"its leader (epoch {old}) was replaced by epoch {epoch}",
            )
        )
    return [run_id for run_id, _ in stale]


async def ping(conn: AsyncConnection) -> None:
    await conn.execute(text("SELECT 1"))


async def oldest_checked_per_app(conn: AsyncConnection) -> dict[str, datetime]:
    """Freshness: the oldest `session_state.checked_at` of each app."""
    from audit_job.store.tables import session_state as ss

    rows = await conn.execute(
        select(ss.c.app_id, func.min(ss.c.checked_at).label("oldest")).group_by(ss.c.app_id)
    )
    return {row.app_id: row.oldest for row in rows}


# -- SQLite: one daemon per file -----------------------------------------------------------


def lock_sqlite_file(database: str) -> TextIO | None:
    """Hold an exclusive lock on `<database>.daemon.lock` for the process's life, or raise
    RunConflict naming the daemon holding it. None for an in-memory database."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).expanduser().resolve().with_name(Path(database).name + ".daemon.lock")
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunConflict(
            f"another audit-job daemon ({holder}) already serves {database} (it holds "
            f"{path}); on SQLite only one daemon may run per database file"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{owner_tag()}\n")
    handle.flush()
    return handle
