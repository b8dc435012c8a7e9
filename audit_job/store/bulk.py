"""The per-batch hot path, in each driver's own terms.

A run writes every answer once and claims every row once, so these statements run about
as often as requests are sent. Going through the driver connection (inside SQLAlchemy's
transaction) skips per-row bind processing, which cost more CPU than the SQL itself.
PostgreSQL gets one statement per batch (arrays unnested server-side); MySQL/MariaDB one
statement per batch too (the rows as one JSON parameter, turned into a table by JSON_TABLE:
MariaDB 10.6+, MySQL 8); SQLite gets `executemany` of prepared statements, run inline (see
`_inline`). Other dialects use the Core statements in runs.py.
Values arrive already bounded and clipped (runs.py); times are aware UTC datetimes, or
what `row_time` made of them (SQLite: the stored text; MySQL: naive UTC).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# Rows arrive in the order of the SQLite statements' `?` marks, so they go to the driver as
# built (runs.write_results makes them in one pass); PostgreSQL takes their columns.
# (status, active, checked_at, attempts, http_status, status_code, api_code, message,
#  request_id, latency_ms, id)
CheckRow = tuple[
    str,
    bool | None,
    datetime | str,
    int,
    int | None,
    int | None,
    int | None,
    str | None,
    str | None,
    int | None,
    int,
]
# (app_id, user_id, active, checked_at, changed_at, run_id); changed_at is checked_at: a
# new state row changed when it was first seen (the upsert keeps an older change time).
StateRow = tuple[str, str, bool, datetime | str, datetime | str, int]

# A pending row as claims hand it out: (id, app_id, user_id, the pair's own expectation
# from the snapshot: None when it has none, see policy.py).
Claimed = tuple[int, str, str, str | None]

SUPPORTED = ("postgresql", "sqlite", "mysql", "mariadb")
MYSQL = ("mysql", "mariadb")


def sqlite_time(value: datetime) -> str:
    """How SQLAlchemy stores a UTC DateTime in SQLite (see store.types.UtcDateTime):
    'YYYY-MM-DD HH:MM:SS.ffffff', microseconds always present."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]  # without the "+00:00"


def naive_utc(value: datetime) -> datetime:
    """A MySQL DATETIME's value: UTC without a zone (JSON_TABLE reads no offsets on
    MariaDB; orjson writes a naive datetime as ISO 8601, which DATETIME(6) reads)."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None)


def row_time(dialect: str) -> Callable[[datetime], Any] | None:
    """How a batch row carries its time on `dialect` (None: the aware datetime itself)."""
    if dialect == "sqlite":
        return sqlite_time
    if dialect in MYSQL:
        return naive_utc
    return None


async def _driver(conn: AsyncConnection) -> Any:
    raw = await conn.get_raw_connection()
    if getattr(raw, "_transaction", False) is None:
        # SQLAlchemy's asyncpg adapter opens the transaction at its first statement; a
        # statement sent straight to the driver before that would run outside it.
        await conn.execute(text("SELECT 1"))
    return raw.driver_connection


def _inline(driver: Any) -> sqlite3.Connection | None:
    """The sqlite3 connection under aiosqlite, for statements run on the event loop's thread.

    aiosqlite runs each call in its own thread, and an `executemany` there gives the GIL up
    and takes it back around every row: with the event loop busy, each of those hand-overs
    is a wait and a context switch, which cost several times the SQL itself. A batch's
    statements run inline instead, after the transaction's first write took the write lock
    through the thread (so they never wait for another writer) and while this coroutine
    owns the connection (so the thread is idle). None when aiosqlite changed its insides."""
    connection = getattr(driver, "_connection", None)
    return connection if isinstance(connection, sqlite3.Connection) else None


INLINE_SLICE_ROWS = 100  # ~1-2 ms of SQLite work: the longest the event loop is held


async def _executemany_sqlite(driver: Any, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    inline = _inline(driver)
    if inline is None:
        await driver.executemany(sql, rows)
        return
    # In slices, yielding between them: a whole batch at once held the loop for ~10 ms,
    # long enough to delay answers (latency-bound runs) and bunch up requests at the
    # server's rate-limit window.
    for start in range(0, len(rows), INLINE_SLICE_ROWS):
        inline.executemany(sql, rows[start : start + INLINE_SLICE_ROWS])
        await asyncio.sleep(0)


_PG_WRITE = """
UPDATE session_check AS s SET
    status = v.status, active = v.active, checked_at = v.checked_at, attempts = v.attempts,
    http_status = v.http_status, status_code = v.status_code, api_code = v.api_code,
    message = v.message, request_id = v.request_id, latency_ms = v.latency_ms
FROM unnest($1::text[], $2::boolean[], $3::timestamptz[], $4::int[], $5::int[],
            $6::int[], $7::bigint[], $8::text[], $9::text[], $10::int[], $11::bigint[])
    AS v(status, active, checked_at, attempts, http_status, status_code, api_code,
         message, request_id, latency_ms, id)
WHERE s.id = v.id AND s.run_id = $12 AND s.status = 'pending'
RETURNING s.id
"""

_SQLITE_WRITE = """
UPDATE session_check SET
    status = ?, active = ?, checked_at = ?, attempts = ?, http_status = ?, status_code = ?,
    api_code = ?, message = ?, request_id = ?, latency_ms = ?
WHERE id = ? AND status = 'pending'
"""

# SQLite and MySQL/MariaDB say which of a batch's rows are still pending before the UPDATE
# (PostgreSQL's UPDATE returns them): the rows this batch turns final. The batch's first
# statement took SQLite's write lock; on MySQL the rows are locked until the commit.
_SQLITE_STILL_PENDING = """
SELECT id FROM session_check
WHERE status = 'pending' AND id IN (SELECT value FROM json_each(?))
"""
_MYSQL_STILL_PENDING = """
SELECT s.id FROM JSON_TABLE(%s, '$[*]' COLUMNS (id BIGINT PATH '$')) AS v
JOIN session_check AS s ON s.id = v.id
WHERE s.status = 'pending'
FOR UPDATE
"""

_PG_STATE = """
INSERT INTO session_state AS t (app_id, user_id, active, checked_at, changed_at, run_id)
SELECT v.app_id, v.user_id, v.active, v.checked_at, v.checked_at, v.run_id
FROM unnest($1::text[], $2::text[], $3::boolean[], $4::timestamptz[], $5::int[])
    AS v(app_id, user_id, active, checked_at, run_id)
ON CONFLICT (app_id, user_id) DO UPDATE SET
    active = excluded.active,
    checked_at = excluded.checked_at,
    run_id = excluded.run_id,
    changed_at = CASE WHEN t.active <> excluded.active
                      THEN excluded.checked_at ELSE t.changed_at END
WHERE excluded.checked_at >= t.checked_at
"""

_SQLITE_STATE = """
INSERT INTO session_state (app_id, user_id, active, checked_at, changed_at, run_id)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (app_id, user_id) DO UPDATE SET
    active = excluded.active,
    checked_at = excluded.checked_at,
    run_id = excluded.run_id,
    changed_at = CASE WHEN session_state.active <> excluded.active
                      THEN excluded.checked_at ELSE session_state.changed_at END
WHERE excluded.checked_at >= session_state.checked_at
"""


# MySQL/MariaDB: the batch is one JSON array of rows (each in CheckRow / StateRow order), one
# parameter whatever the batch size: the driver escapes one string instead of ~5,000 values.
# Strings are declared utf8mb4 so that 4-byte characters survive JSON_TABLE.
_MYSQL_WRITE = """
UPDATE session_check AS s
JOIN JSON_TABLE(%s, '$[*]' COLUMNS (
    status VARCHAR(16) CHARACTER SET utf8mb4 PATH '$[0]',
    active BOOLEAN PATH '$[1]',
    checked_at DATETIME(6) PATH '$[2]',
    attempts INT PATH '$[3]',
    http_status INT PATH '$[4]',
    status_code INT PATH '$[5]',
    api_code BIGINT PATH '$[6]',
    message VARCHAR(512) CHARACTER SET utf8mb4 PATH '$[7]',
    request_id VARCHAR(128) CHARACTER SET utf8mb4 PATH '$[8]',
    latency_ms INT PATH '$[9]',
    id BIGINT PATH '$[10]'
)) AS v ON s.id = v.id
SET s.status = v.status, s.active = v.active, s.checked_at = v.checked_at,
    s.attempts = v.attempts, s.http_status = v.http_status, s.status_code = v.status_code,
    s.api_code = v.api_code, s.message = v.message, s.request_id = v.request_id,
    s.latency_ms = v.latency_ms
WHERE s.status = 'pending'
"""

# The same rule as the PostgreSQL and SQLite upserts. MySQL assigns left to right, each
# assignment seeing the ones before it, so checked_at (which every test reads) goes last;
# rows apply in array order, so a repeated pair is simply updated again, as on SQLite.
_MYSQL_STATE = """
INSERT INTO session_state (app_id, user_id, active, checked_at, changed_at, run_id)
SELECT v.app_id, v.user_id, v.active, v.checked_at, v.checked_at, v.run_id
FROM JSON_TABLE(%s, '$[*]' COLUMNS (
    app_id VARCHAR(255) CHARACTER SET utf8mb4 PATH '$[0]',
    user_id VARCHAR(255) CHARACTER SET utf8mb4 PATH '$[1]',
    active BOOLEAN PATH '$[2]',
    checked_at DATETIME(6) PATH '$[3]',
    run_id INT PATH '$[5]'
)) AS v
ON DUPLICATE KEY UPDATE
    changed_at = IF(v.checked_at >= session_state.checked_at
                    AND v.active <> session_state.active, v.checked_at, session_state.changed_at),
    active = IF(v.checked_at >= session_state.checked_at, v.active, session_state.active),
    run_id = IF(v.checked_at >= session_state.checked_at, v.run_id, session_state.run_id),
    checked_at = GREATEST(v.checked_at, session_state.checked_at)
"""


async def _json_rows(conn: AsyncConnection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    # Through SQLAlchemy (one parameter: no per-row bind processing to skip), so that a lost
    # connection is noticed by the pool and errors arrive wrapped like any other.
    await conn.exec_driver_sql(sql, (orjson.dumps(rows).decode(),))


async def write_checks(conn: AsyncConnection, run_id: int, rows: list[CheckRow]) -> set[int]:
    """Write the batch's answers into the rows still pending; the ids of those rows (the
    ones this batch turned final: a replayed batch, or a row another worker answered
    first, is left alone and not in the set). run_id: PostgreSQL then updates the run's
    partition only (store/partitions.py)."""
    if conn.dialect.name in MYSQL:
        ids = orjson.dumps([row[10] for row in rows]).decode()
        pending = await conn.exec_driver_sql(_MYSQL_STILL_PENDING, (ids,))
        final = {int(r[0]) for r in pending}
        if final:
            await _json_rows(conn, _MYSQL_WRITE, rows)
        return final
    driver = await _driver(conn)
    if conn.dialect.name == "postgresql":
        columns = (list(column) for column in zip(*rows, strict=True))
        return {r[0] for r in await driver.fetch(_PG_WRITE, *columns, run_id)}
    ids = orjson.dumps([row[10] for row in rows]).decode()
    inline = _inline(driver)
    if inline is not None:
        final = {r[0] for r in inline.execute(_SQLITE_STILL_PENDING, (ids,))}
    else:
        cursor = await driver.execute(_SQLITE_STILL_PENDING, (ids,))
        final = {r[0] for r in await cursor.fetchall()}
        await cursor.close()
    if final:
        await _executemany_sqlite(driver, _SQLITE_WRITE, rows)
    return final


async def upsert_states(conn: AsyncConnection, rows: list[StateRow]) -> None:
    if conn.dialect.name in MYSQL:
        await _json_rows(conn, _MYSQL_STATE, rows)
        return
    driver = await _driver(conn)
    if conn.dialect.name == "postgresql":
        # One row per pair per statement: ON CONFLICT cannot touch a row twice in one command.
        latest: dict[tuple[str, str], StateRow] = {}
        for row in rows:
            key = (row[0], row[1])
            if key not in latest or row[3] >= latest[key][3]:  # type: ignore[operator]
                latest[key] = row
        apps, users, actives, times, _changed, run_ids = zip(*latest.values(), strict=True)
        await driver.execute(
            _PG_STATE, list(apps), list(users), list(actives), list(times), list(run_ids)
        )
        return
    # Statement by statement, a repeated pair is simply updated again (latest time wins).
    await _executemany_sqlite(driver, _SQLITE_STATE, rows)


def _pending_sql(dialect: str, upto: bool, limit: bool) -> str:
    mark = {"postgresql": lambda n: f"${n}", "sqlite": lambda n: "?"}.get(dialect, lambda n: "%s")
    upper = f" AND id <= {mark(3)}" if upto else ""
    cap = f" LIMIT {mark(4 if upto else 3)}" if limit else ""
    return (
        "SELECT id, app_id, user_id, expect FROM session_check "
        f"WHERE run_id = {mark(1)} AND status = 'pending' AND id > {mark(2)}{upper} "
        f"ORDER BY id{cap}"
    )


async def pending_rows(
    conn: AsyncConnection,
    run_id: int,
    after_id: int,
    limit: int | None,
    upto_id: int | None = None,
) -> list[Claimed]:
    """The run's pending rows with `after_id < id <= upto_id`, in id order, at most
    `limit` (None: all), each with the pair's own expectation from the snapshot.
    Claims read thousands of rows a second: through the driver."""
    dialect = conn.dialect.name
    params: list[Any] = [run_id, after_id]
    if upto_id is not None:
        params.append(upto_id)
    if limit is not None:
        params.append(limit)
    sql = _pending_sql(dialect, upto_id is not None, limit is not None)
    if dialect in MYSQL:
        return [(r[0], r[1], r[2], r[3]) for r in await conn.exec_driver_sql(sql, tuple(params))]
    driver = await _driver(conn)
    if dialect == "postgresql":
        return [(r[0], r[1], r[2], r[3]) for r in await driver.fetch(sql, *params)]
    cursor = await driver.execute(sql, params)
    rows = await cursor.fetchall()  # (id, app_id, user_id, expect) tuples already
    await cursor.close()
    return list(rows)
