"""The only dialect-specific SQL: upserts, insert-or-ignore, row claiming.

PostgreSQL and SQLite share `INSERT .. ON CONFLICT`; MySQL/MariaDB use
`ON DUPLICATE KEY UPDATE` (kept here so the schema and queries stay portable).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, and_, case, or_
from sqlalchemy.sql.dml import Insert


def _insert(table: Table, dialect: str) -> Any:
    # Each dialect's module is imported on first use: a process talks to one database,
    # and the three together cost ~35 ms of every start-up that loads the store.
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects import mysql

        return mysql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def insert_ignore(table: Table, dialect: str, keys: list[str]) -> Insert:
    """Insert rows whose key is new; leave existing rows untouched."""
    ins = _insert(table, dialect)
    if dialect in ("mysql", "mariadb"):
        return ins.on_duplicate_key_update({keys[0]: table.c[keys[0]]})
    return ins.on_conflict_do_nothing(index_elements=keys)


def upsert_columns(table: Table, dialect: str, keys: list[str], columns: list[str]) -> Insert:
    """Insert new rows; on a key clash overwrite `columns` with the new values."""
    ins = _insert(table, dialect)
    if dialect in ("mysql", "mariadb"):
        return ins.on_duplicate_key_update({c: ins.inserted[c] for c in columns})
    changed = or_(*(table.c[c] != ins.excluded[c] for c in columns))
    return ins.on_conflict_do_update(
        index_elements=keys, set_={c: ins.excluded[c] for c in columns}, where=changed
    )


def upsert_state(table: Table, dialect: str) -> Insert:
    """Latest state per pair: `changed_at` moves only when `active` flips, and an older
    answer (a resumed old run finishing late) never overwrites a newer one."""
    ins = _insert(table, dialect)
    if dialect in ("mysql", "mariadb"):
        new = ins.inserted
        newer = new.checked_at >= table.c.checked_at
        return ins.on_duplicate_key_update(
            changed_at=case(
                (and_(newer, table.c.active != new.active), new.checked_at),
                else_=table.c.changed_at,
            ),
            active=case((newer, new.active), else_=table.c.active),
            run_id=case((newer, new.run_id), else_=table.c.run_id),
            checked_at=case((newer, new.checked_at), else_=table.c.checked_at),
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
    elif conn.dialect.name in ("mysql", "mariadb"):
        # A row lock on the feed's newest row would do; MySQL is not supported for runs yet.
        raise NotImplementedError("the event feed needs PostgreSQL or SQLite")
