"""Queries on `audit_target`: the pairs to audit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_job.models import Expect
from audit_job.store.dialect import insert_ignore, upsert_columns
from audit_job.store.tables import audit_target
from audit_job.store.types import utcnow


async def count(
    conn: AsyncConnection,
    *,
    enabled_only: bool = False,
    app_id: str | None = None,
    user_id: str | None = None,
) -> int:
    stmt = select(func.count()).select_from(audit_target)
    if enabled_only:
        stmt = stmt.where(audit_target.c.enabled.is_(True))
    if app_id is not None:
        stmt = stmt.where(audit_target.c.app_id == app_id)
    if user_id is not None:
        stmt = stmt.where(audit_target.c.user_id == user_id)
    return int((await conn.execute(stmt)).scalar_one())


async def save_batch(
    conn: AsyncConnection,
    rows: Sequence[tuple[str, str, bool | None] | tuple[str, str, bool | None, str | None]],
    *,
    now: datetime | None = None,
) -> None:
    """Insert (app, user, enabled[, expect]) rows; an explicit `enabled` or `expect`
    updates existing rows, None leaves that column as it is (new rows: enabled, `any`).
    (Drivers disagree on executemany rowcounts, so callers count the table before and
    after instead.)"""
    if not rows:
        return
    now = now or utcnow()
    dialect = conn.dialect.name
    keys = ["app_id", "user_id"]
    groups: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for row in rows:
        app, user, enabled = row[0], row[1], row[2]
        expect = row[3] if len(row) > 3 else None
        given = tuple(
            name for name, value in (("enabled", enabled), ("expect", expect)) if value is not None
        )
        groups.setdefault(given, []).append(
            {
                "app_id": app,
                "user_id": user,
                "enabled": True if enabled is None else enabled,
                "expect": expect or Expect.ANY.value,
                "created_at": now,
            }
        )
    for given, values in groups.items():
        if given:
            stmt = upsert_columns(audit_target, dialect, keys, list(given))
        else:
            stmt = insert_ignore(audit_target, dialect, keys)
        await conn.execute(stmt, values)


async def set_expect(conn: AsyncConnection, app_id: str, user_id: str | None, expect: str) -> int:
    """Set the expectation of a pair, or of every pair of an app."""
    stmt = update(audit_target).where(audit_target.c.app_id == app_id).values(expect=expect)
    if user_id is not None:
        stmt = stmt.where(audit_target.c.user_id == user_id)
    return (await conn.execute(stmt)).rowcount or 0


async def get_enabled(conn: AsyncConnection, app_id: str, user_id: str) -> bool | None:
    """The pair's `enabled` flag, or None when it is not a target."""
    stmt = select(audit_target.c.enabled).where(
        audit_target.c.app_id == app_id, audit_target.c.user_id == user_id
    )
    return (await conn.execute(stmt)).scalar_one_or_none()


async def remove(conn: AsyncConnection, app_id: str, user_id: str) -> bool:
    result = await conn.execute(
        delete(audit_target).where(
            audit_target.c.app_id == app_id, audit_target.c.user_id == user_id
        )
    )
    return bool(result.rowcount)


async def set_enabled(
    conn: AsyncConnection, app_id: str, user_id: str | None, enabled: bool
) -> int:
    stmt = update(audit_target).where(audit_target.c.app_id == app_id).values(enabled=enabled)
    if user_id is not None:
        stmt = stmt.where(audit_target.c.user_id == user_id)
    return (await conn.execute(stmt)).rowcount or 0


async def stream(
    engine: AsyncEngine,
    *,
    app_id: str | None = None,
    user_id: str | None = None,
    enabled_only: bool = False,
    batch: int = 5000,
) -> AsyncIterator[dict[str, object]]:
    """All matching targets in key order, fetched in keyset pages (bounded memory)."""
    last: tuple[str, str] | None = None
    columns = audit_target.c
    while True:
        stmt = select(
            columns.app_id, columns.user_id, columns.enabled, columns.created_at, columns.expect
        )
        if app_id is not None:
            stmt = stmt.where(columns.app_id == app_id)
        if user_id is not None:
            stmt = stmt.where(columns.user_id == user_id)
        if enabled_only:
            stmt = stmt.where(columns.enabled.is_(True))
        if last is not None:
            stmt = stmt.where(
                (columns.app_id > last[0])
                | ((columns.app_id == last[0]) & (columns.user_id > last[1]))
            )
        stmt = stmt.order_by(columns.app_id, columns.user_id).limit(batch)
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        for row in rows:
            yield dict(row)
        if len(rows) < batch:
            return
        last = (rows[-1]["app_id"], rows[-1]["user_id"])
