"""The remediation log (`remediation`): one row per pair of a kick plan.

States: `planned` (written with the plan) -> `sent` (the intent, committed before the
kick-users call) -> `kicked` or `failed` (the outcome, committed after it, with its
events). A row left `sent` means the process died around its call: whether the kick
landed is unknown, and the resuming process asks check-session-status before calling
again. The re-check columns say whether the session was gone afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.store.tables import MESSAGE_LENGTH, REQUEST_ID_LENGTH, remediation
from audit_job.store.types import utcnow

PLANNED, SENT, KICKED, FAILED = "planned", "sent", "kicked", "failed"
UNFINISHED = (PLANNED, SENT)
ACTED = (SENT, KICKED)  # a violation with such a row is not planned again


class Step(NamedTuple):
    id: int
    violation_id: int | None
    app_id: str
    user_id: str
    state: str
    recheck_active: bool | None


_STEP = [remediation.c[name] for name in Step._fields]


async def write_plan(
    conn: AsyncConnection,
    plan_id: str,
    items: Sequence[tuple[str, str, int | None]],
    actor: str,
    os_user: str,
) -> None:
    now = utcnow()
    await conn.execute(
        insert(remediation),
        [
            {
                "plan_id": plan_id,
                "violation_id": violation_id,
                "app_id": app_id,
                "user_id": user_id,
                "state": PLANNED,
                "planned_at": now,
                "attempts": 0,
                "actor": actor,
                "os_user": os_user,
            }
            for app_id, user_id, violation_id in items
        ],
    )


async def steps(conn: AsyncConnection, plan_id: str) -> list[Step]:
    stmt = select(*_STEP).where(remediation.c.plan_id == plan_id).order_by(remediation.c.id)
    return [Step(*row) for row in await conn.execute(stmt)]


async def unfinished_plans(conn: AsyncConnection) -> list[str]:
    """Plans with a row not yet kicked or failed, or kicked and not yet re-checked."""
    c = remediation.c
    stmt = (
        select(c.plan_id, func.min(c.id).label("first"))
        .where(c.state.in_(UNFINISHED) | ((c.state == KICKED) & c.rechecked_at.is_(None)))
        .group_by(c.plan_id)
        .order_by("first")
    )
    return [row.plan_id for row in await conn.execute(stmt)]


async def acted_on(conn: AsyncConnection, violation_ids: Sequence[int]) -> set[int]:
    """Of these violations, those a kick was sent for or landed on (never kicked twice)."""
    found: set[int] = set()
    ids = list(violation_ids)
    for start in range(0, len(ids), 500):
        stmt = select(remediation.c.violation_id).where(
            remediation.c.violation_id.in_(ids[start : start + 500]),
            remediation.c.state.in_(ACTED),
        )
        found.update(row[0] for row in await conn.execute(stmt))
    return found


async def mark_sent(conn: AsyncConnection, ids: Sequence[int], actor: str, os_user: str) -> None:
    await conn.execute(
        update(remediation)
        .where(remediation.c.id.in_(list(ids)))
        .values(state=SENT, sent_at=utcnow(), actor=actor, os_user=os_user)
    )


async def mark_outcome(
    conn: AsyncConnection,
    ids: Sequence[int],
    state: str,
    *,
    attempts: int,
    request_id: str | None,
    message: str | None,
    at: datetime | None = None,
) -> None:
    await conn.execute(
        update(remediation)
        .where(remediation.c.id.in_(list(ids)))
        .values(
            state=state,
            finished_at=at or utcnow(),
            attempts=remediation.c.attempts + attempts,
            request_id=(request_id or "")[:REQUEST_ID_LENGTH] or None,
            message=(message or "")[:MESSAGE_LENGTH] or None,
        )
    )


async def mark_rechecked(
    conn: AsyncConnection, step_id: int, active: bool | None, at: datetime, run_id: int
) -> None:
    await conn.execute(
        update(remediation)
        .where(remediation.c.id == step_id)
        .values(recheck_active=active, rechecked_at=at, recheck_run_id=run_id)
    )
