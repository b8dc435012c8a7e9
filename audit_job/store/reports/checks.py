"""Checks as they were answered: filtered exports in keyset pages, one pair's history run
by run (with where its answer flipped), and per-app status counts of given runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_job.models import CheckStatus
from audit_job.store import summary
from audit_job.store.reports import ACTIVATED, CHECK_COLUMNS, DEACTIVATED, FIRST_SEEN, PAGE
from audit_job.store.tables import audit_run, session_check


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


async def app_status_counts(
    conn: AsyncConnection, run_ids: Sequence[int]
) -> dict[int, dict[str, dict[str, int]]]:
    """{run_id: {app_id: {status: count}}} for the given runs, every status present: an
    ended run's from its summary rows, the others counted from their checks."""
    result: dict[int, dict[str, dict[str, int]]] = {run_id: {} for run_id in run_ids}
    result.update(await summary.read_summaries(conn, run_ids))
    uncounted = [run_id for run_id in run_ids if not result[run_id]]
    if not uncounted:
        return result
    stmt = (
        select(session_check.c.run_id, session_check.c.app_id, session_check.c.status, func.count())
        .where(session_check.c.run_id.in_(uncounted))
        .group_by(session_check.c.run_id, session_check.c.app_id, session_check.c.status)
    )
    for run_id, app_id, status, count in await conn.execute(stmt):
        per_app = result[run_id].setdefault(app_id, {s.value: 0 for s in CheckStatus})
        per_app[status] = int(count)
    return result
