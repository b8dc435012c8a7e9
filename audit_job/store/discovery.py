"""Discovery's tables: each listing's cursor (`discovery_cursor`), a sync's scratch rows
(`discovery_seen`), and the sync diff read from them in keyset pages (bounded memory)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, delete, exists, not_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.store.dialect import insert_ignore, upsert_columns
from audit_job.store.events import PAIR_CHUNK
from audit_job.store.tables import audit_target, discovery_cursor, discovery_seen
from audit_job.store.types import utcnow

EXISTS_MARK = ""  # discovery_seen.app_id of a row that says "this user exists"


async def cursors(conn: AsyncConnection, scan: str) -> dict[str, tuple[str, int, bool]]:
    """listing -> (spec, last committed page, done) of a scan."""
    c = discovery_cursor.c
    rows = await conn.execute(select(c.listing, c.spec, c.page, c.done).where(c.scan == scan))
    return {row.listing: (row.spec, row.page, row.done) for row in rows}


async def reset(conn: AsyncConnection, scan: str) -> None:
    """Forget a scan's cursors and scratch rows (a new scan starts at page 1)."""
    await conn.execute(delete(discovery_cursor).where(discovery_cursor.c.scan == scan))
    await conn.execute(delete(discovery_seen).where(discovery_seen.c.scan == scan))


async def save_cursor(
    conn: AsyncConnection, scan: str, listing: str, spec: str, page: int, done: bool
) -> None:
    stmt = upsert_columns(
        discovery_cursor,
        conn.dialect.name,
        ["scan", "listing"],
        ["spec", "page", "done", "updated_at"],
    )
    stmt = stmt.values(
        scan=scan, listing=listing, spec=spec, page=page, done=done, updated_at=utcnow()
    )
    await conn.execute(stmt)


async def remember(conn: AsyncConnection, scan: str, rows: Sequence[tuple[str, str]]) -> None:
    """(app_id, user_id) rows a sync scan saw; app_id EXISTS_MARK for a user that exists."""
    if rows:
        stmt = insert_ignore(discovery_seen, conn.dialect.name, ["scan", "app_id", "user_id"])
        await conn.execute(stmt, [{"scan": scan, "app_id": a, "user_id": u} for a, u in rows])


async def new_pairs(
    conn: AsyncConnection, scan: str, after: tuple[str, str] | None, limit: int
) -> list[tuple[str, str]]:
    """Proposed pairs that are not targets yet, in key order after `after`."""
    s, t = discovery_seen.c, audit_target.c
    stmt = select(s.app_id, s.user_id).where(
        s.scan == scan,
        s.app_id != EXISTS_MARK,
        not_(exists().where(and_(t.app_id == s.app_id, t.user_id == s.user_id))),
    )
    if after is not None:
        stmt = stmt.where(tuple_(s.app_id, s.user_id) > tuple_(*after))
    stmt = stmt.order_by(s.app_id, s.user_id).limit(limit)
    return [(row.app_id, row.user_id) for row in await conn.execute(stmt)]


async def gone_pairs(
    conn: AsyncConnection,
    scan: str,
    apps: Sequence[str],
    after: tuple[str, str] | None,
    limit: int,
) -> list[tuple[str, str, str]]:
    """Enabled targets whose app is not among `apps` (every app Authing lists) or whose
    user the scan did not see: (app_id, user_id, why), in key order after `after`."""
    s, t = discovery_seen.c, audit_target.c
    user_seen = exists().where(
        and_(s.scan == scan, s.app_id == EXISTS_MARK, s.user_id == t.user_id)
    )
    app_known = t.app_id.in_(list(apps)) if apps else None
    stmt = select(t.app_id, t.user_id, user_seen.label("user_seen")).where(t.enabled.is_(True))
    gone = not_(user_seen) if app_known is None else not_(user_seen) | not_(app_known)
    stmt = stmt.where(gone)
    if after is not None:
        stmt = stmt.where(tuple_(t.app_id, t.user_id) > tuple_(*after))
    stmt = stmt.order_by(t.app_id, t.user_id).limit(limit)
    known = set(apps)
    return [
        (row.app_id, row.user_id, "app gone" if row.app_id not in known else "user gone")
        for row in await conn.execute(stmt)
    ]


async def disable(conn: AsyncConnection, pairs: Sequence[tuple[str, str]]) -> int:
    """Disable these targets (never delete: their history stays)."""
    changed = 0
    t = audit_target.c
    for start in range(0, len(pairs), PAIR_CHUNK):
        chunk = list(pairs[start : start + PAIR_CHUNK])
        result = await conn.execute(
            update(audit_target)
            .where(tuple_(t.app_id, t.user_id).in_(chunk), t.enabled.is_(True))
            .values(enabled=False)
        )
        changed += result.rowcount or 0
    return changed


async def any_user_seen(conn: AsyncConnection, scan: str) -> bool:
    s = discovery_seen.c
    stmt = select(s.user_id).where(s.scan == scan, s.app_id == EXISTS_MARK).limit(1)
    return (await conn.execute(stmt)).first() is not None
