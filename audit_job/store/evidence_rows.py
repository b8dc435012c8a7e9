"""A run's checks in canonical order, page by page, in each driver's own terms.

The digest of a run reads every one of its rows when it ends (a million for a large run),
so this is a hot path like store/bulk.py: rows come straight from the driver (no per-row
SQLAlchemy processing), in pages, in constant memory. Each row is a sequence in
`canonical.CHECK_FIELDS` order with `checked_at` as canonical text and `active` a bool.

Order: app_id, then user_id, by UTF-8 bytes on every backend. PostgreSQL sorts text by the
database's collation unless told `COLLATE "C"` (byte order); SQLite's default BINARY
collation is byte order already; MySQL/MariaDB need a binary collation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.evidence.canonical import CHECK_FIELDS, check_line, format_time, sqlite_time
from audit_job.store import bulk
from audit_job.store.tables import session_check

PAGE_ROWS = 5000
Row = Sequence[Any]

_COLUMNS = ", ".join(CHECK_FIELDS)
# PostgreSQL formats checked_at itself (exact microseconds, UTC): no datetime per row.
_PG_TIME = """to_char(checked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
_PG_SQL = (
    f"SELECT {_COLUMNS.replace('checked_at', _PG_TIME)} FROM session_check WHERE run_id = $1 "
    'ORDER BY app_id COLLATE "C", user_id COLLATE "C"'
)
# The unary + keeps SQLite from walking the (app_id, user_id, run_id) key of every run in
# order: it finds the run's rows by (run_id, ...) and sorts just those.
_SQLITE_SQL = f"SELECT {_COLUMNS} FROM session_check WHERE run_id = ? ORDER BY +app_id, +user_id"
_BINARY_COLLATION = {"mysql": "utf8mb4_bin", "mariadb": "utf8mb4_bin"}

# SQLite writes each results.jsonl line itself: a million rows then cost one string per
# row instead of twelve Python objects and a format. json_quote escapes exactly as
# Python's json does (tests/unit/test_canonical.py and the cross-backend digest test keep
# them equal); checked_at is stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (store/types.py), and
# a value stored in any other shape is kept as it is, so its line no longer matches.
_SQLITE_LINE_SQL = """
SELECT '{"active":' || CASE WHEN active IS NULL THEN 'null'
                            WHEN active THEN 'true' ELSE 'false' END
    || ',"api_code":' || COALESCE(api_code, 'null')
    || ',"app_id":' || json_quote(app_id)
    || ',"attempts":' || attempts
    || ',"checked_at":' || CASE WHEN checked_at IS NULL THEN 'null'
                                WHEN length(checked_at) = 26 AND substr(checked_at, 11, 1) = ' '
                                THEN '"' || substr(checked_at, 1, 10) || 'T'
                                         || substr(checked_at, 12) || 'Z"'
                                ELSE json_quote(checked_at) END
    || ',"http_status":' || COALESCE(http_status, 'null')
    || ',"latency_ms":' || COALESCE(latency_ms, 'null')
    || ',"message":' || COALESCE(json_quote(message), 'null')
    || ',"request_id":' || COALESCE(json_quote(request_id), 'null')
    || ',"status":' || json_quote(status)
    || ',"status_code":' || COALESCE(status_code, 'null')
    || ',"user_id":' || json_quote(user_id) || '}' || char(10)
FROM session_check WHERE run_id = ? ORDER BY +app_id, +user_id
"""


async def check_pages(conn: AsyncConnection, run_id: int) -> AsyncIterator[list[Row]]:
    """The run's rows in canonical order, `PAGE_ROWS` at a time, inside the caller's
    transaction (so a digest taken while finishing sees the finishing writes)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        async for page in _pg_pages(conn, run_id):
            yield page
    elif dialect == "sqlite":
        async for page in _sqlite_pages(conn, run_id):
            yield page
    else:
        async for page in _core_pages(conn, run_id):
            yield page


async def line_pages(conn: AsyncConnection, run_id: int) -> AsyncIterator[list[str]]:
    """The run's results.jsonl lines in canonical order, page by page (what a digest
    reads), in the caller's transaction."""
    if conn.dialect.name == "sqlite":
        driver = await bulk._driver(conn)
        cursor = await driver.execute(_SQLITE_LINE_SQL, (run_id,))
        try:
            while rows := await cursor.fetchmany(PAGE_ROWS):
                yield [row[0] for row in rows]
        finally:
            await cursor.close()
        return
    async for page in check_pages(conn, run_id):
        yield list(map(check_line, page))


async def _pg_pages(conn: AsyncConnection, run_id: int) -> AsyncIterator[list[Row]]:
    driver = await bulk._driver(conn)  # inside SQLAlchemy's transaction (a cursor needs one)
    cursor = await driver.cursor(_PG_SQL, run_id)
    while records := await cursor.fetch(PAGE_ROWS):
        yield records  # asyncpg Records: sequences in CHECK_FIELDS order already


async def _sqlite_pages(conn: AsyncConnection, run_id: int) -> AsyncIterator[list[Row]]:
    driver = await bulk._driver(conn)
    # aiosqlite: each fetchmany is one hop to its thread, so a long read never holds the
    # event loop (the daemon's lease renewals share it).
    cursor = await driver.execute(_SQLITE_SQL, (run_id,))
    try:
        while True:
            rows = await cursor.fetchmany(PAGE_ROWS)
            if not rows:
                return
            yield [
                (
                    r[0],
                    r[1],
                    r[2],
                    None if r[3] is None else bool(r[3]),
                    sqlite_time(r[4]),
                    *r[5:],
                )
                for r in rows
            ]
    finally:
        await cursor.close()


async def _core_pages(conn: AsyncConnection, run_id: int) -> AsyncIterator[list[Row]]:
    collation = _BINARY_COLLATION.get(conn.dialect.name)
    app, user = session_check.c.app_id, session_check.c.user_id
    order = [app.collate(collation), user.collate(collation)] if collation else [app, user]
    stmt = (
        select(*(session_check.c[name] for name in CHECK_FIELDS))
        .where(session_check.c.run_id == run_id)
        .order_by(*order)
    )
    result = await conn.stream(stmt)
    async for partition in result.partitions(PAGE_ROWS):
        yield [(r[0], r[1], r[2], r[3], format_time(r[4]), *r[5:]) for r in partition]
