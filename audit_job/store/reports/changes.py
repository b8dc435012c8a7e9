"""Changes between two runs, pair by pair: answers that flipped, pairs newly seen, and
pairs gone from the targets; in keyset pages, LEFT JOINs only (no FULL OUTER JOIN)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.store import run_changes
from audit_job.store.reports import (
    ACTIVATED,
    DEACTIVATED,
    GONE,
    NEWLY_SEEN,
    PAGE,
    newly_seen_or_flipped,
)
from audit_job.store.tables import audit_run_change, audit_target, session_check


async def stream_changes(
    engine: AsyncEngine, run_id: int, base_run_id: int | None, page: int = PAGE
) -> AsyncIterator[dict[str, Any]]:
    """How run `run_id` differs from run `base_run_id`, pair by pair.

    - inactive->active / active->inactive: both runs answered and the answers differ;
    - newly_seen: the pair is in this run and was not in the base run;
    - gone_from_targets: the pair was in the base run, is not in this one, and is no
      longer an enabled target (a run narrowed with --app does not make pairs "gone").
    An error on either side is no answer, so no change.

    A run compared with the run before it reads what was recorded when it ended
    (store/run_changes.py); any other comparison is made here, pair by pair.
    """
    if base_run_id is not None:
        async with engine.connect() as conn:
            recorded = await run_changes.recorded_base(conn, run_id) == base_run_id
        if recorded:
            async for row in _recorded_changes(engine, run_id, base_run_id, page):
                yield row
            return
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
                newly_seen_or_flipped(now, before),
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
            yield _change_row(row, change, row["from_run_id"], run_id)
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


async def _recorded_changes(
    engine: AsyncEngine, run_id: int, base_run_id: int, page: int
) -> AsyncIterator[dict[str, Any]]:
    """The recorded changes, in the live comparison's order: this run's rows by id, then
    the pairs gone (those no longer an enabled target, asked now) by the base run's ids."""
    rc = audit_run_change
    for gone in (False, True):
        last = 0
        while True:
            stmt = (
                select(rc)
                .where(rc.c.run_id == run_id, rc.c.check_id > last)
                .order_by(rc.c.check_id)
                .limit(page)
            )
            if gone:
                target = and_(
                    audit_target.c.app_id == rc.c.app_id, audit_target.c.user_id == rc.c.user_id
                )
                stmt = stmt.outerjoin(audit_target, target).where(
                    rc.c.change == GONE,
                    or_(audit_target.c.app_id.is_(None), audit_target.c.enabled.is_(False)),
                )
            else:
                stmt = stmt.where(rc.c.change != GONE)
            async with engine.connect() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
            for row in rows:
                change = row["change"]
                from_run = None if change == NEWLY_SEEN else base_run_id
                yield _change_row(row, change, from_run, run_id)
            if len(rows) < page:
                break
            last = rows[-1]["check_id"]


def _change_row(row: Any, change: str, from_run_id: int | None, run_id: int) -> dict[str, Any]:
    """One line of `changes` (CHANGE_COLUMNS) from a row with the pair, the two statuses
    and the answer's time."""
    return {
        "app_id": row["app_id"],
        "user_id": row["user_id"],
        "change": change,
        "from_run_id": from_run_id,
        "from_status": row["from_status"],
        "to_run_id": run_id,
        "to_status": row["to_status"],
        "checked_at": row["checked_at"],
    }
