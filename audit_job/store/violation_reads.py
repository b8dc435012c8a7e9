"""Reading violations (`audit_violation`): the `violations` listing, the gauges, a run's
counts for its summary and report. The write side is store/violations.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_job.store.tables import audit_violation
from audit_job.store.violations import SEVERITY_RANK, VIOLATION_COLUMNS


async def stream(
    engine: AsyncEngine,
    *,
    open_only: bool = False,
    app_id: str | None = None,
    min_severity: str | None = None,
    since: datetime | None = None,
    page: int = 5000,
) -> AsyncIterator[dict[str, Any]]:
    """Violations, newest first, in keyset pages (bounded memory)."""
    columns = [audit_violation.c[name] for name in VIOLATION_COLUMNS]
    last: int | None = None
    while True:
        stmt = select(*columns)
        if open_only:
            stmt = stmt.where(audit_violation.c.is_open.is_not(None))
        if app_id is not None:
            stmt = stmt.where(audit_violation.c.app_id == app_id)
        if min_severity is not None:
            allowed = [
                s for s, rank in SEVERITY_RANK.items() if rank >= SEVERITY_RANK[min_severity]
            ]
            stmt = stmt.where(audit_violation.c.severity.in_(allowed))
        if since is not None:
            stmt = stmt.where(audit_violation.c.opened_at >= since)
        if last is not None:
            stmt = stmt.where(audit_violation.c.id < last)
        stmt = stmt.order_by(audit_violation.c.id.desc()).limit(page)
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        for row in rows:
            yield dict(row)
        if len(rows) < page:
            return
        last = rows[-1]["id"]


async def open_counts(conn: AsyncConnection) -> dict[tuple[str, str], int]:
    """Open violations per (app_id, severity): the `audit_job_open_violations` gauge."""
    stmt = (
        select(audit_violation.c.app_id, audit_violation.c.severity, func.count())
        .where(audit_violation.c.is_open.is_not(None))
        .group_by(audit_violation.c.app_id, audit_violation.c.severity)
    )
    return {(app, severity): int(n) for app, severity, n in await conn.execute(stmt)}


async def any_open(conn: AsyncConnection) -> bool:
    """Is any violation open? (A run asks once at its start: `judge(maybe_open=...)`.)"""
    stmt = select(audit_violation.c.id).where(audit_violation.c.is_open.is_not(None)).limit(1)
    return (await conn.execute(stmt)).first() is not None


async def count_open(conn: AsyncConnection) -> int:
    stmt = (
        select(func.count())
        .select_from(audit_violation)
        .where(audit_violation.c.is_open.is_not(None))
    )
    return int((await conn.execute(stmt)).scalar_one())


async def run_counts(conn: AsyncConnection, run_id: int) -> dict[str, int]:
    """What a run did to the violations: opened and resolved by it, and open in all now."""

    def count(*where: Any) -> Any:
        return select(func.count()).select_from(audit_violation).where(*where).scalar_subquery()

    row = (
        await conn.execute(
            select(
                count(audit_violation.c.opened_run_id == run_id),
                count(audit_violation.c.resolved_run_id == run_id),
                count(audit_violation.c.is_open.is_not(None)),
            )
        )
    ).one()
    return {"opened": int(row[0]), "resolved": int(row[1]), "open": int(row[2])}


async def per_app_of_run(conn: AsyncConnection, run_id: int) -> dict[str, dict[str, int]]:
    """Per app: violations opened and resolved by run `run_id`, and open just after it
    (opened by it or an earlier run, not resolved by then): the report's columns."""
    v = audit_violation.c

    def one_if(condition: Any) -> Any:
        return case((condition, 1), else_=0)

    opened_by = one_if(v.opened_run_id == run_id)
    resolved_by = one_if(v.resolved_run_id == run_id)
    still_open = one_if(v.is_open.is_not(None) | (v.resolved_run_id > run_id))
    stmt = (
        select(v.app_id, func.sum(opened_by), func.sum(resolved_by), func.sum(still_open))
        .where(v.opened_run_id <= run_id)
        .group_by(v.app_id)
    )
    return {
        app: {"opened": int(o or 0), "resolved": int(r or 0), "open": int(n or 0)}
        for app, o, r, n in await conn.execute(stmt)
    }


async def open_after_run(conn: AsyncConnection, run_id: int, limit: int) -> list[dict[str, Any]]:
    """The violations open just after run `run_id` (most severe, then newest first), at
    most `limit`."""
    v = audit_violation.c
    columns = [audit_violation.c[name] for name in VIOLATION_COLUMNS]
    rank = case(SEVERITY_RANK, value=v.severity, else_=0)
    stmt = (
        select(*columns)
        .where(v.opened_run_id <= run_id, v.is_open.is_not(None) | (v.resolved_run_id > run_id))
        .order_by(rank.desc(), v.id.desc())
        .limit(limit)
    )
    return [dict(row) for row in (await conn.execute(stmt)).mappings()]
