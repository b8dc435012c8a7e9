"""PostgreSQL for tests: where it is, and throwaway databases. A module of its own (not
conftest) so test modules in any folder can import it unambiguously."""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg
import pytest

PG_HOST = os.environ.get("AUDIT_JOB_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("AUDIT_JOB_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("AUDIT_JOB_TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("AUDIT_JOB_TEST_PG_DB", "test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# A test that holds only on PostgreSQL: the `backend` fixture narrowed to it.
only_pg = pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.pg)])
# A test that needs a database server (several workers or hosts, row locks): PostgreSQL and
# MariaDB, not SQLite.
server_backends = pytest.mark.parametrize(
    "backend",
    [
        pytest.param("postgresql", marks=pytest.mark.pg),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
)


def pg_url(database: str) -> str:
    return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


async def admin_connection() -> asyncpg.Connection:
    return await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB, timeout=5
    )


def unreachable_reason() -> str | None:
    async def probe() -> None:
        conn = await admin_connection()
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} unreachable: {exc}"
    return None


async def fresh_pg_database(template: str | None) -> str:
    name = f"audit_job_t_{uuid.uuid4().hex[:12]}"
    conn = await admin_connection()
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await conn.close()
    return name


async def drop_pg_database(name: str) -> None:
    conn = await admin_connection()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
