"""The only dialect-specific SQL: upserts, insert-or-ignore, locks, the server's clock.

PostgreSQL and SQLite share `INSERT .. ON CONFLICT`; MySQL/MariaDB use
`ON DUPLICATE KEY UPDATE` and `INSERT IGNORE` (kept here so the schema and queries stay
portable). The batch hot path has its own statements in store/bulk.py.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, case, func, literal_column, or_, text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from audit_job.store.types import utcnow

MYSQL = ("mysql", "mariadb")  # SQLAlchemy names MariaDB "mariadb" for mariadb:// URLs


def is_mysql(dialect: str) -> bool:
    return dialect in MYSQL


def table_options(dialect: Dialect) -> dict[str, str]:
    """Options for a new table (migrations): on MySQL/MariaDB utf8mb4 with a binary,
    no-pad collation, so ids compare byte for byte as on SQLite and PostgreSQL: `User1`
    and `user1`, or `user1` and `user1 `, stay two pairs. (The servers' default
    collations ignore case, and `utf8mb4_bin` ignores trailing spaces.) MariaDB and
    MySQL 8 name that collation differently."""
    if not is_mysql(dialect.name):
        return {}
    collation = "utf8mb4_nopad_bin" if dialect.is_mariadb else "utf8mb4_0900_bin"
    return {"mysql_charset": "utf8mb4", "mysql_collate": collation}


def _insert(table: Table, dialect: str) -> Any:
    # Each dialect's module is imported on first use: a process talks to one database,
    # and the three together cost ~35 ms of every start-up that loads the store.
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    if is_mysql(dialect):
        from sqlalchemy.dialects import mysql

        return mysql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def insert_ignore(table: Table, dialect: str, keys: list[str]) -> Insert:
    """Insert rows whose key is new; leave existing rows untouched. The rowcount is the
    number of rows inserted (callers rely on it: a slot row, the first lease row).

    MySQL: `INSERT IGNORE`, not `ON DUPLICATE KEY UPDATE k = k`, which with the
    FOUND_ROWS flag SQLAlchemy sets counts an untouched duplicate as one row. IGNORE also
    turns other row errors into warnings; the values written here are bounded already."""
    ins = _insert(table, dialect)
    if is_mysql(dialect):
        return ins.prefix_with("IGNORE")
    return ins.on_conflict_do_nothing(index_elements=keys)


def upsert_columns(table: Table, dialect: str, keys: list[str], columns: list[str]) -> Insert:
    """Insert new rows; on a key clash overwrite `columns` with the new values."""
    ins = _insert(table, dialect)
    if is_mysql(dialect):
        return ins.on_duplicate_key_update({c: ins.inserted[c] for c in columns})
    changed = or_(*(table.c[c] != ins.excluded[c] for c in columns))
    return ins.on_conflict_do_update(
        index_elements=keys, set_={c: ins.excluded[c] for c in columns}, where=changed
    )


def upsert_state(table: Table, dialect: str) -> Insert:
    """Latest state per pair: `changed_at` moves only when `active` flips, and an older
    answer (a resumed old run finishing late) never overwrites a newer one."""
    ins = _insert(table, dialect)
    if is_mysql(dialect):
        # MySQL assigns left to right, each assignment seeing the ones before: checked_at,
        # which `newer` reads, goes last.
        new = ins.inserted
        newer = new.checked_at >= table.c.checked_at
        return ins.on_duplicate_key_update(
            [
                (
                    "changed_at",
                    case(
                        (and_(newer, table.c.active != new.active), new.checked_at),
                        else_=table.c.changed_at,
                    ),
                ),
                ("active", case((newer, new.active), else_=table.c.active)),
                ("run_id", case((newer, new.run_id), else_=table.c.run_id)),
                ("checked_at", case((newer, new.checked_at), else_=table.c.checked_at)),
            ]
        )
    new = ins.excluded
    return ins.on_conflict_do_update(
        index_elements=["app_id", "user_id"],
        set_={
            "active": new.active,
            "checked_at": new.checked_at,
            "run_id": new.run_id,
            "changed_at": case(
                (table.c.active != new.active, new.checked_at), else_=table.c.changed_at
            ),
        },
        where=new.checked_at >= table.c.checked_at,
    )


EVENT_APPEND_LOCK = 720462  # pg_advisory_xact_lock key (runs use 720461)


async def lock_event_appends(conn: Any) -> None:
    """Make event ids commit in id order: held from before the first id is taken until
    the transaction ends, so a reader that sees id N committed knows every smaller id is
    committed or gone (a sink's cursor then never skips a late commit). SQLite needs
    nothing: its one writer at a time holds the database's write lock for as long."""
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({EVENT_APPEND_LOCK})")
    elif is_mysql(conn.dialect.name):
        from audit_job.store.tables import leader_lease

        await lock_named_row(conn, leader_lease, EVENT_APPEND_ROW)


# -- the server's clock ----------------------------------------------------------------------


def server_now(dialect: str) -> ColumnElement[datetime] | datetime:
    """Now by the database server's clock, which every node shares; this host's clock on
    SQLite (one host anyway). MySQL: UTC_TIMESTAMP(6), since NOW() follows the session's
    time_zone and drops the microseconds."""
    if dialect == "postgresql":
        return func.now()
    if is_mysql(dialect):
        return func.utc_timestamp(literal_column("6"))
    return utcnow()


def later(moment: ColumnElement[datetime] | datetime, seconds: float, dialect: str) -> Any:
    """`moment` + `seconds` (MySQL cannot add a Python interval to a DATETIME)."""
    if is_mysql(dialect) and isinstance(moment, ColumnElement):
        micros = round(seconds * 1_000_000)
        return func.timestampadd(literal_column("MICROSECOND"), micros, moment)
    return moment + timedelta(seconds=seconds)


# -- locks ---------------------------------------------------------------------------------


def has_row_locks(dialect: str) -> bool:
    """Whether `SELECT .. FOR UPDATE / FOR SHARE` locks rows (SQLite locks the file)."""
    return dialect == "postgresql" or is_mysql(dialect)


async def bound_frozen_writer(conn: AsyncConnection, milliseconds: int) -> None:
    """Have the server end this session if it idles inside the current transaction for
    longer than `milliseconds`, so that a writer frozen while it holds a lock (SIGSTOP, a
    long pause) cannot block others for as long as it sleeps.

    PostgreSQL: for this transaction only. MariaDB counts whole seconds and has no
    transaction-local setting: the bound stays on the session (the pooled connection),
    which is harmless because none of the tool's transactions waits on anything but the
    database. MySQL has no such setting: nothing is done there."""
    dialect = conn.dialect
    if dialect.name == "postgresql":
        await conn.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {milliseconds}"))
    elif is_mysql(dialect.name) and dialect.is_mariadb:
        seconds = max(1, math.ceil(milliseconds / 1000))
        await conn.execute(text(f"SET SESSION idle_transaction_timeout = {seconds}"))


RUN_CREATION_ROW = "run_creation"
EVENT_APPEND_ROW = "event_append"  # MySQL: the event feed's append lock (see above)


async def lock_named_row(conn: AsyncConnection, table: Table, name: str) -> None:
    """MySQL/MariaDB: hold an exclusive lock on the row `name` of `table` (keyed by
    `name`, with `epoch`) until the transaction ends, creating the row the first time.
    GET_LOCK would outlive the transaction (it belongs to the session), so a row lock it
    is: `INSERT .. ON DUPLICATE KEY UPDATE` locks the row whether it inserts or finds it."""
    from sqlalchemy.dialects import mysql

    stmt = mysql.insert(table).values(name=name, epoch=0)
    await conn.execute(stmt.on_duplicate_key_update(name=stmt.inserted.name))
