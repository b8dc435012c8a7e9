"""What a run did beyond its answers, for its evidence bundle: the violations it opened or
resolved and the events it appended, each in a fixed order and frozen at the run's end.

A violation opened by run N and resolved by a later run M shows up twice: as `opened` in
N's bundle and as `resolved` in M's. Each row carries only what that run did, so a bundle
made again later is byte-identical even after the violation's row changed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.models import EventType
from audit_job.store.tables import audit_event, audit_violation

VIOLATION_COLUMNS = [
    "violation_id",
    "action",
    "app_id",
    "user_id",
    "expected",
    "observed",
    "severity",
    "source",
    "at",
    "resolution",
]
EVENT_COLUMNS = ["id", "type", "created_at", "run_id", "app_id", "user_id", "payload"]
# The events a run appends itself; later ones that mention it (a remediation) belong to
# the command that wrote them, not to the run's record.
RUN_EVENT_TYPES = [
    t.value for t in EventType if t.value.startswith(("session.", "violation.", "run.", "slot."))
]


async def run_violations(conn: AsyncConnection, run_id: int) -> AsyncIterator[dict[str, Any]]:
    """The violations the run opened, then those it resolved, each by violation id."""
    v = audit_violation.c
    common = [v.id, v.app_id, v.user_id, v.expected, v.observed, v.severity, v.source]
    opened = select(*common, v.opened_at).where(v.opened_run_id == run_id).order_by(v.id)
    for row in (await conn.execute(opened)).all():
        yield _violation(row, "opened", row.opened_at, None)
    resolved = (
        select(*common, v.resolved_at, v.resolution)
        .where(v.resolved_run_id == run_id)
        .order_by(v.id)
    )
    for row in (await conn.execute(resolved)).all():
        yield _violation(row, "resolved", row.resolved_at, row.resolution)


def _violation(row: Any, action: str, at: Any, resolution: str | None) -> dict[str, Any]:
    return {
        "violation_id": row.id,
        "action": action,
        "app_id": row.app_id,
        "user_id": row.user_id,
        "expected": row.expected,
        "observed": row.observed,
        "severity": row.severity,
        "source": row.source,
        "at": at,
        "resolution": resolution,
    }


async def run_events(conn: AsyncConnection, run_id: int) -> AsyncIterator[dict[str, Any]]:
    """The events the run appended, in id order (streamed: a run may flip many pairs)."""
    e = audit_event.c
    stmt = (
        select(*(e[name] for name in EVENT_COLUMNS))
        .where(e.run_id == run_id, e.type.in_(RUN_EVENT_TYPES))
        .order_by(e.id)
    )
    result = await conn.stream(stmt)
    async for row in result.mappings():
        yield dict(row)
