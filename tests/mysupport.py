"""MariaDB (or MySQL) for tests: where it is, and throwaway databases cloned fast.

MariaDB has no template databases, and migrating a fresh database costs ~1 s of ALTERs.
So one database is migrated once per session, its schema read back once as statements
(`SHOW CREATE TABLE`, `SHOW CREATE VIEW`, the alembic_version row), and each test's
database is a CREATE DATABASE plus that replay on one admin connection.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass

import asyncmy
import asyncmy.errors
import pytest

MY_HOST = os.environ.get("AUDIT_JOB_TEST_MARIADB_HOST", "127.0.0.1")
MY_PORT = int(os.environ.get("AUDIT_JOB_TEST_MARIADB_PORT", "3306"))
MY_USER = os.environ.get("AUDIT_JOB_TEST_MARIADB_USER", "root")
MY_ADMIN_DB = os.environ.get("AUDIT_JOB_TEST_MARIADB_DB", "test")

mariadb_param = pytest.param("mariadb", marks=pytest.mark.mariadb)


def my_url(database: str, host: str = MY_HOST, port: int = MY_PORT) -> str:
    return f"mysql+asyncmy://{MY_USER}@{host}:{port}/{database}"


async def admin_connection(database: str | None = MY_ADMIN_DB) -> asyncmy.Connection:
    return await asyncmy.connect(
        host=MY_HOST,
        port=MY_PORT,
        user=MY_USER,
        db=database,
        connect_timeout=5,
        autocommit=True,
        charset="utf8mb4",
    )


async def execute(conn: asyncmy.Connection, *statements: str) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    async with conn.cursor() as cursor:
        for statement in statements:
            await cursor.execute(statement)
            rows = list(await cursor.fetchall() or [])
    return rows


def unreachable_reason() -> str | None:
    async def probe() -> None:
        conn = await admin_connection()
        conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"MariaDB at {MY_HOST}:{MY_PORT} unreachable: {exc}"
    return None


@dataclass(frozen=True)
class Schema:
    """A migrated database as the statements that rebuild it."""

    tables: tuple[str, ...]  # CREATE TABLE, in any order (foreign key checks are off)
    views: tuple[str, ...]
    rows: tuple[str, ...]  # INSERTs: the alembic_version row


async def read_schema(database: str) -> Schema:
    conn = await admin_connection(database)
    try:
        listed = await execute(conn, "SHOW FULL TABLES")
        tables, views = [], []
        for name, kind in listed:
            if kind == "VIEW":
                create = (await execute(conn, f"SHOW CREATE VIEW `{name}`"))[0][1]
                views.append(str(create))
            else:
                tables.append(str((await execute(conn, f"SHOW CREATE TABLE `{name}`"))[0][1]))
        versions = await execute(conn, "SELECT version_num FROM alembic_version")
    finally:
        conn.close()
    rows = tuple(f"INSERT INTO alembic_version VALUES ('{v}')" for (v,) in versions)
    return Schema(tuple(tables), tuple(views), rows)


async def fresh_database(schema: Schema | None) -> str:
    """A new database, empty or with `schema` replayed into it."""
    name = f"audit_job_t_{uuid.uuid4().hex[:12]}"
    conn = await admin_connection()
    try:
        await execute(conn, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        if schema is not None:
            await execute(
                conn,
                f"USE `{name}`",
                "SET SESSION foreign_key_checks = 0",
                *schema.tables,
                *schema.views,
                *schema.rows,
            )
    finally:
        conn.close()
    return name


async def drop_database(name: str) -> None:
    """Drop `name`, first ending any session still on it (as PostgreSQL's WITH (FORCE)):
    a leftover transaction would hold a metadata lock and stall the DROP."""
    conn = await admin_connection()
    try:
        sessions = await execute(
            conn, f"SELECT id FROM information_schema.processlist WHERE db = '{name}'"
        )
        for (session,) in sessions:
            try:
                await execute(conn, f"KILL {int(session)}")
            except asyncmy.errors.OperationalError:
                pass  # gone already
        await execute(
            conn, "SET SESSION lock_wait_timeout = 60", f"DROP DATABASE IF EXISTS `{name}`"
        )
    finally:
        conn.close()
