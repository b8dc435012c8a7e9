"""Read-side queries for the reporting commands: runs, checks, a pair's history, changes
between two runs, per-app counts.

Anything that can be large (checks, changes) is fetched in keyset pages, each page on a
connection of its own, so an export of a million rows holds one page in memory and no
transaction stays open for the whole export. Plain SQL shapes only (LEFT JOIN, no FULL
OUTER JOIN, no window functions) so the same statements run on SQLite, PostgreSQL and
MySQL/MariaDB.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_job.models import CheckStatus, RunStatus
from audit_job.store.tables import audit_run, audit_target, session_check

PAGE = 5000
NOT_REAL = (RunStatus.SKIPPED_OVERLAP.value, RunStatus.MISSED.value)  # runs without checks

RUN_COLUMNS = [
    "id",
    "trigger",
    "status",
    "started_at",
    "finished_at",
    "duration_seconds",
    "total",
    "active",
    "inactive",
    "failed",
    "retries",
    "throttled",
    "scheduled_for",
    "missed_count",
    "message",
]
CHECK_COLUMNS = [
    "run_id",
    "app_id",
    "user_id",
    "status",
    "active",
    "checked_at",
    "attempts",
    "http_status",
    "status_code",
    "api_code",
    "message",
    "request_id",
    "latency_ms",
]
HISTORY_COLUMNS = ["run_id", "run_started_at", "status", "active", "checked_at", "change"]
CHANGE_COLUMNS = [
    "app_id",
    "user_id",
    "change",
    "from_run_id",
    "from_status",
    "to_run_id",
    "to_status",
    "checked_at",
]

ACTIVATED = "inactive->active"
DEACTIVATED = "active->inactive"
NEWLY_SEEN = "newly_seen"
GONE = "gone_from_targets"
FIRST_SEEN = "first_seen"


async def stream_checks(
    engine: AsyncEngine,
    *,
    run_id: int | None,
    app_id: str | None = None,
    user_id: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page: int = PAGE,
) -> AsyncIterator[dict[str, Any]]:
    """Checks in id order, filtered; keyset pages on the primary key."""
    columns = [session_check.c[name] for name in CHECK_COLUMNS]
    conditions = []
    if run_id is not None:
        conditions.append(session_check.c.run_id == run_id)
    if app_id is not None:
        conditions.append(session_check.c.app_id == app_id)
    if user_id is not None:
        conditions.append(session_check.c.user_id == user_id)
    if status is not None:
        conditions.append(session_check.c.status == status)
    if since is not None:
        conditions.append(session_check.c.checked_at >= since)
    if until is not None:
        conditions.append(session_check.c.checked_at < until)
    last = 0
    while True:
        stmt = (
            select(session_check.c.id, *columns)
            .where(session_check.c.id > last, *conditions)
            .order_by(session_check.c.id)
            .limit(page)
        )
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        for row in rows:
            yield {name: row[name] for name in CHECK_COLUMNS}
        if len(rows) < page:
            return
        last = rows[-1]["id"]


def _change(before: bool | None, after: bool | None) -> str:
    if before is None:
        return FIRST_SEEN
    if before == after:
        return ""
    return ACTIVATED if after else DEACTIVATED


async def stream_history(
    engine: AsyncEngine, app_id: str, user_id: str, page: int = PAGE
) -> AsyncIterator[dict[str, Any]]:
    """A pair's checks run by run; `change` marks where its conclusive answer flipped
    (errors and pending rows carry no answer and leave the previous one standing)."""
    known: bool | None = None
    last = 0
    while True:
        stmt = (
            select(
                session_check.c.run_id,
                audit_run.c.started_at.label("run_started_at"),
                session_check.c.status,
                session_check.c.active,
                session_check.c.checked_at,
            )
            .join(audit_run, audit_run.c.id == session_check.c.run_id)
            .where(
                session_check.c.app_id == app_id,
                session_check.c.user_id == user_id,
                session_check.c.run_id > last,
            )
            .order_by(session_check.c.run_id)
            .limit(page)
        )
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        for row in rows:
            entry = dict(row)
            entry["change"] = ""
            if entry["active"] is not None:
                entry["change"] = _change(known, entry["active"])
                known = entry["active"]
            yield entry
        if len(rows) < page:
            return
        last = rows[-1]["run_id"]


async def stream_changes(
    engine: AsyncEngine, run_id: int, base_run_id: int | None, page: int = PAGE
) -> AsyncIterator[dict[str, Any]]:
    """How run `run_id` differs from run `base_run_id`, pair by pair.

    - inactive->active / active->inactive: both runs answered and the answers differ;
    - newly_seen: the pair is in this run and was not in the base run;
    - gone_from_targets: the pair was in the base run, is not in this one, and is no
      longer an enabled target (a run narrowed with --app does not make pairs "gone").
    An error on either side is no answer, so no change.
    """
    now, before = session_check.alias("now_check"), session_check.alias("base_check")
    last = 0
    while True:
        stmt = (
            select(
                now.c.id,
                now.c.app_id,
                now.c.user_id,
                now.c.status.label("to_status"),
                now.c.active.label("to_active"),
                now.c.checked_at,
                before.c.run_id.label("from_run_id"),
                before.c.status.label("from_status"),
            )
            .select_from(
                now.outerjoin(
                    before,
                    and_(
                        before.c.run_id == base_run_id,
                        before.c.app_id == now.c.app_id,
                        before.c.user_id == now.c.user_id,
                    ),
                )
            )
            .where(
                now.c.run_id == run_id,
                now.c.id > last,
                or_(
                    before.c.id.is_(None),
                    and_(
                        now.c.active.is_not(None),
                        before.c.active.is_not(None),
                        now.c.active != before.c.active,
                    ),
                ),
            )
            .order_by(now.c.id)
            .limit(page)
        )
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        for row in rows:
            if row["from_run_id"] is None:
                change = NEWLY_SEEN
            else:
                change = ACTIVATED if row["to_active"] else DEACTIVATED
            yield {
                "app_id": row["app_id"],
                "user_id": row["user_id"],
                "change": change,
                "from_run_id": row["from_run_id"],
                "from_status": row["from_status"],
                "to_run_id": run_id,
                "to_status": row["to_status"],
                "checked_at": row["checked_at"],
            }
        if len(rows) < page:
            break
        last = rows[-1]["id"]
    if base_run_id is None:
        return
    last = 0
    while True:
        stmt = (
            select(before.c.id, before.c.app_id, before.c.user_id, before.c.status)
            .select_from(
                before.outerjoin(
                    now,
                    and_(
                        now.c.run_id == run_id,
                        now.c.app_id == before.c.app_id,
                        now.c.user_id == before.c.user_id,
                    ),
                ).outerjoin(
                    audit_target,
                    and_(
                        audit_target.c.app_id == before.c.app_id,
                        audit_target.c.user_id == before.c.user_id,
                    ),
                )
            )
            .where(
                before.c.run_id == base_run_id,
                before.c.id > last,
                now.c.id.is_(None),
                or_(audit_target.c.app_id.is_(None), audit_target.c.enabled.is_(False)),
            )
            .order_by(before.c.id)
            .limit(page)
        )
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        for row in rows:
            yield {
                "app_id": row["app_id"],
                "user_id": row["user_id"],
                "change": GONE,
                "from_run_id": base_run_id,
                "from_status": row["status"],
                "to_run_id": run_id,
                "to_status": None,
                "checked_at": None,
            }
        if len(rows) < page:
            return
        last = rows[-1]["id"]


async def app_status_counts(
    conn: AsyncConnection, run_ids: Sequence[int]
) -> dict[int, dict[str, dict[str, int]]]:
    """{run_id: {app_id: {status: count}}} for the given runs, every status present."""
    result: dict[int, dict[str, dict[str, int]]] = {run_id: {} for run_id in run_ids}
    if not run_ids:
        return result
    stmt = (
        select(session_check.c.run_id, session_check.c.app_id, session_check.c.status, func.count())
        .where(session_check.c.run_id.in_(run_ids))
        .group_by(session_check.c.run_id, session_check.c.app_id, session_check.c.status)
    )
    for run_id, app_id, status, count in await conn.execute(stmt):
        per_app = result[run_id].setdefault(app_id, {s.value: 0 for s in CheckStatus})
        per_app[status] = int(count)
    return result
