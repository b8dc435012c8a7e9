"""Shared fixtures: every storage test runs on SQLite, PostgreSQL and MariaDB.

PostgreSQL databases are cloned per test from a template migrated once per session
(CREATE DATABASE .. TEMPLATE); MariaDB ones from a schema read once from a migrated
database and replayed (tests/mysupport.py), so each test starts from a fresh, migrated
schema. Both are made ahead of need and dropped after use on a thread (tests/dbclones.py).
Locally an unreachable server skips its share of the suite with a printed reason; under CI
(CI=true) it fails instead.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import mysupport
import pytest
from dbclones import Clones
from mysupport import mariadb_param, my_url
from pgsupport import (
    IN_CI,
    admin_connection,
    drop_pg_database,
    fresh_pg_database,
    pg_url,
    unreachable_reason,
)

from audit_job.store import migrate
from audit_job.store.engine import create_engine


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated to head, to clone from. Fails under CI if PG is down."""
    reason = unreachable_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"{reason} (PostgreSQL is mandatory when CI is set)")
        pytest.skip(reason)
    name = f"audit_job_tpl_{os.getpid()}"

    async def build() -> None:
        conn = await admin_connection()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        engine = create_engine(pg_url(name))
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(build())
    yield name

    async def drop() -> None:
        conn = await admin_connection()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture(scope="session")
def pg_clones(pg_template: str) -> Iterator[Clones]:
    """Fresh clones of the template, made ahead of need."""
    clones = Clones(lambda: fresh_pg_database(pg_template), drop_pg_database)
    yield clones
    clones.close()


@pytest.fixture(scope="session")
def mariadb_clones() -> Iterator[Clones]:
    """Fresh migrated MariaDB databases, cloned ahead of need. Fails under CI if MariaDB
    is down."""
    reason = mysupport.unreachable_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"{reason} (MariaDB is mandatory when CI is set)")
        pytest.skip(reason)

    async def build() -> mysupport.Schema:
        name = await mysupport.fresh_database(None)
        try:
            engine = create_engine(my_url(name))
            try:
                await migrate.upgrade(engine)
            finally:
                await engine.dispose()
            return await mysupport.read_schema(name)
        finally:
            await mysupport.drop_database(name)

    schema = asyncio.run(build())
    clones = Clones(lambda: mysupport.fresh_database(schema), mysupport.drop_database)
    yield clones
    clones.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg), mariadb_param])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


SERVER_URLS = {"postgresql": pg_url, "mariadb": my_url}


@pytest.fixture
def clones_for(backend: str, request: pytest.FixtureRequest) -> Clones | None:
    """The server's clones on PostgreSQL and MariaDB, else None. A sync fixture: the
    session fixtures call asyncio.run, which cannot run inside an async fixture's loop."""
    if backend == "sqlite":
        return None
    return request.getfixturevalue(
        {"postgresql": "pg_clones", "mariadb": "mariadb_clones"}[backend]
    )


@pytest.fixture
async def db_url(backend: str, tmp_path: Path, clones_for: Clones | None) -> AsyncIterator[str]:
    """URL of a fresh database migrated to head, on each backend."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/audit.db"
        engine = create_engine(url)
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()
        yield url
        return
    assert clones_for is not None
    name = await asyncio.to_thread(clones_for.take)
    try:
        yield SERVER_URLS[backend](name)
    finally:
        clones_for.give_back(name)


@pytest.fixture
async def empty_db_url(
    backend: str, tmp_path: Path, clones_for: Clones | None
) -> AsyncIterator[str]:
    """URL of an empty database (no tables), on each backend."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/empty.db"
        return
    # clones_for has already skipped (or failed under CI) when the server is unreachable.
    if backend == "mariadb":
        name = await mysupport.fresh_database(None)
        try:
            yield my_url(name)
        finally:
            await mysupport.drop_database(name)
        return
    name = await fresh_pg_database(None)
    try:
        yield pg_url(name)
    finally:
        await drop_pg_database(name)
