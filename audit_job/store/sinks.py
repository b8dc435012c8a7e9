"""Each sink's delivery state (`audit_sink`): cursor, health, and the lease of the one
deliverer that may send to it at a time.

The cursor (`last_event_id`) moves only through `advance`, after the receiver acknowledged
everything up to it, and only for the lease holder and from the cursor it read (a compare
and set), so two deliverers can never both move it, and a deliverer that lost its lease
(frozen past its expiry) cannot move it back. A lease is taken when free, expired, or
held by a process of this host that no longer exists (a SIGKILLed deliverer).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.store.dialect import insert_ignore
from audit_job.store.tables import MESSAGE_LENGTH, audit_sink
from audit_job.store.types import utcnow

HOST = socket.gethostname()


def new_owner() -> str:
    """`host:pid:token`: unique per deliverer, and tells whether its process is alive."""
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_gone(owner: str | None) -> bool:
    """True when `owner` was a deliverer in a process of this host that no longer exists."""
    if not owner:
        return False
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != HOST or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class SinkState:
    name: str
    last_event_id: int
    delivered: int
    delivered_at: datetime | None
    failing: bool
    failures: int
    retries: int
    last_error: str | None
    last_error_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None


_COLUMNS = [audit_sink.c[name] for name in SinkState.__dataclass_fields__]


def _clip(message: str) -> str:
    return message if len(message) <= MESSAGE_LENGTH else message[: MESSAGE_LENGTH - 1] + "…"


async def ensure(conn: AsyncConnection, names: Sequence[str]) -> None:
    """A row for every configured sink (a new sink starts at the oldest kept event)."""
    if not names:
        return
    stmt = insert_ignore(audit_sink, conn.dialect.name, ["name"])
    await conn.execute(
        stmt,
        [
            {
                "name": n,
                "last_event_id": 0,
                "delivered": 0,
                "failing": False,
                "failures": 0,
                "retries": 0,
            }
            for n in names
        ],
    )


async def states(conn: AsyncConnection) -> dict[str, SinkState]:
    rows = await conn.execute(select(*_COLUMNS).order_by(audit_sink.c.name))
    return {row.name: SinkState(*row) for row in rows}


async def get(conn: AsyncConnection, name: str) -> SinkState | None:
    row = (await conn.execute(select(*_COLUMNS).where(audit_sink.c.name == name))).first()
    return SinkState(*row) if row else None


async def acquire(
    conn: AsyncConnection, name: str, owner: str, lease_seconds: float, now: datetime | None = None
) -> SinkState | None:
    """Take or renew the sink's lease; its state, or None when another deliverer holds it."""
    now = now or utcnow()
    current = await get(conn, name)
    if current is None:
        return None
    free = or_(
        audit_sink.c.lease_owner.is_(None),
        audit_sink.c.lease_owner == owner,
        audit_sink.c.lease_expires_at < now,
    )
    if owner_gone(current.lease_owner):
        free = or_(free, audit_sink.c.lease_owner == current.lease_owner)
    result = await conn.execute(
        update(audit_sink)
        .where(audit_sink.c.name == name, free)
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds))
    )
    if result.rowcount != 1:
        return None
    return await get(conn, name)


async def renew(
    conn: AsyncConnection, name: str, owner: str, lease_seconds: float, now: datetime | None = None
) -> bool:
    now = now or utcnow()
    result = await conn.execute(
        update(audit_sink)
        .where(audit_sink.c.name == name, audit_sink.c.lease_owner == owner)
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
    )
    return result.rowcount == 1


async def release(conn: AsyncConnection, name: str, owner: str) -> None:
    await conn.execute(
        update(audit_sink)
        .where(audit_sink.c.name == name, audit_sink.c.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )


async def advance(
    conn: AsyncConnection,
    name: str,
    owner: str,
    *,
    from_id: int,
    to_id: int,
    delivered: int,
    now: datetime | None = None,
) -> bool:
    """Move the cursor from `from_id` to `to_id` after an acknowledgement of `delivered`
    events; False (nothing written) when this deliverer no longer holds the sink or the
    cursor is not where it read it."""
    values: dict[str, object] = {"last_event_id": to_id}
    if delivered:
        values.update(delivered=audit_sink.c.delivered + delivered, delivered_at=now or utcnow())
    result = await conn.execute(
        update(audit_sink)
        .where(
            audit_sink.c.name == name,
            audit_sink.c.lease_owner == owner,
            audit_sink.c.last_event_id == from_id,
        )
        .values(**values)
    )
    return result.rowcount == 1


async def record_retry(
    conn: AsyncConnection, name: str, message: str, now: datetime | None = None
) -> None:
    """A transient failure (the receiver was down, slow, or asked to wait)."""
    await conn.execute(
        update(audit_sink)
        .where(audit_sink.c.name == name)
        .values(
            retries=audit_sink.c.retries + 1,
            last_error=_clip(message),
            last_error_at=now or utcnow(),
        )
    )


async def mark_failing(
    conn: AsyncConnection, name: str, message: str, now: datetime | None = None
) -> None:
    """A permanent refusal: the sink stops until `audit-job events retry NAME`."""
    await conn.execute(
        update(audit_sink)
        .where(audit_sink.c.name == name)
        .values(
            failing=True,
            failures=audit_sink.c.failures + 1,
            last_error=_clip(message),
            last_error_at=now or utcnow(),
        )
    )


async def clear_failing(conn: AsyncConnection, name: str) -> bool:
    """`events retry`: deliver again from the cursor (the refused batch first)."""
    result = await conn.execute(
        update(audit_sink).where(audit_sink.c.name == name).values(failing=False)
    )
    return result.rowcount == 1


async def lowest_cursor(conn: AsyncConnection, names: Sequence[str]) -> int | None:
    """The smallest cursor among these sinks (0 for one without a row); None for none."""
    if not names:
        return None
    found = {
        row.name: int(row.last_event_id)
        for row in await conn.execute(
            select(audit_sink.c.name, audit_sink.c.last_event_id).where(
                audit_sink.c.name.in_(list(names))
            )
        )
    }
    return min(found.get(name, 0) for name in names)
