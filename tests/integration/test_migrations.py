"""Alembic migrations on SQLite, PostgreSQL and MariaDB: up, down, up again; schema ==
tables.py."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from helpers import ROOT, cli_env
from mysupport import mariadb_param
from sqlalchemy import insert, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError

from audit_job.models import CheckStatus, RunStatus
from audit_job.store import migrate, schema
from audit_job.store.engine import create_engine
from audit_job.store.partitions import is_partition_name
from audit_job.store.tables import audit_run, audit_target, metadata, session_check

SCHEMA_TABLES = {"audit_target", "audit_run", "session_check", "session_state"}
ALEMBIC = str(Path(sys.executable).parent / "alembic")
MARIADB_IDS = "utf8mb4_nopad_bin"  # store.dialect.table_options on MariaDB


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _differences(connection: Connection) -> list[object]:
    def not_a_partition(name: str | None, type_: str, _parents: object) -> bool:
        return not (type_ == "table" and name is not None and is_partition_name(name))

    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "compare_server_default": True,
            "include_name": not_a_partition,
        },
    )
    return list(compare_metadata(context, metadata))


async def test_upgrade_downgrade_upgrade(empty_db_url: str) -> None:
    engine = create_engine(empty_db_url)
    try:
        assert await migrate.current(engine) is None
        head = migrate.head_revision()
        assert await migrate.upgrade(engine) == head
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) >= SCHEMA_TABLES
        # Downgrade must work with rows present, not only on an empty schema.
        async with engine.begin() as conn:
            await conn.execute(
                insert(audit_target),
                [{"app_id": "a", "user_id": "u", "enabled": True, "created_at": datetime.now(UTC)}],
            )
        assert await migrate.downgrade(engine, "base") is None
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) & SCHEMA_TABLES == set()
        assert await migrate.upgrade(engine) == head
        assert await migrate.upgrade(engine) == head  # a second upgrade is a no-op
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) >= SCHEMA_TABLES
            assert (await conn.execute(select(audit_target))).all() == []
            assert await conn.run_sync(_differences) == []
    finally:
        await engine.dispose()


async def test_schema_after_upgrade_matches_tables_py(db_url: str) -> None:
    """Alembic's own comparison, types included: UtcDateTime compares as its impl,
    DateTime(timezone=True), so no allowance for the TypeDecorator is needed."""
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences) == []
    finally:
        await engine.dispose()


async def test_comparison_would_notice_a_drift(db_url: str) -> None:
    """Guard against a comparison that can never fail: a missing index shows up."""
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            mysql = conn.dialect.name in ("mysql", "mariadb")  # MySQL names the table
            await conn.exec_driver_sql(
                "DROP INDEX ix_audit_run_status" + (" ON audit_run" if mysql else "")
            )
            diffs = await conn.run_sync(_differences)
        assert [d[0] for d in diffs] == ["add_index"]  # type: ignore[index]
    finally:
        await engine.dispose()


async def test_status_check_constraints_match_the_enums(db_url: str) -> None:
    """compare_metadata does not compare CHECK constraints, so exercise them."""
    engine = create_engine(db_url)
    now = datetime.now(UTC)
    try:
        async with engine.begin() as conn:
            for status in RunStatus:
                await conn.execute(
                    insert(audit_run).values(trigger="manual", status=status.value, started_at=now)
                )
            run_id = (await conn.execute(select(audit_run.c.id).limit(1))).scalar_one()
            for number, status in enumerate(CheckStatus):
                await conn.execute(
                    insert(session_check).values(
                        run_id=run_id, app_id="a", user_id=str(number), status=status.value
                    )
                )
        # MariaDB reports a failed CHECK as error 4025, which its drivers class as
        # OperationalError.
        rejected = (
            OperationalError if engine.dialect.name in ("mysql", "mariadb") else IntegrityError
        )
        for table, values in (
            (audit_run, {"trigger": "manual", "status": "done", "started_at": now}),
            (session_check, {"run_id": run_id, "app_id": "a", "user_id": "x", "status": "ok"}),
        ):
            with pytest.raises(rejected, match="ck_" if rejected is OperationalError else None):
                async with engine.begin() as conn:
                    await conn.execute(insert(table).values(**values))
    finally:
        await engine.dispose()


def test_alembic_own_cli_upgrades_and_downgrades(empty_db_url: str, tmp_path: Path) -> None:
    env = cli_env(AUDIT_JOB_DATABASE_URL=empty_db_url)

    def alembic(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ALEMBIC, "-c", str(ROOT / "alembic.ini"), *args],
            cwd=tmp_path,  # alembic.ini locates migrations/ itself
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    upgraded = alembic("upgrade", "head")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "Running upgrade  -> 0001" in upgraded.stderr
    current = alembic("current")
    assert current.returncode == 0, current.stderr
    assert current.stdout.split() == [migrate.head_revision(), "(head)"]
    downgraded = alembic("downgrade", "base")
    assert downgraded.returncode == 0, downgraded.stderr
    assert "Running downgrade 0001 -> " in downgraded.stderr
    assert alembic("current").stdout.strip() == ""


def test_the_light_schema_check_knows_alembics_head() -> None:
    # Commands check the schema without importing Alembic (store/schema.py): its constant
    # must move with every new migration.
    assert migrate.head_revision() == schema.HEAD_REVISION


@pytest.mark.parametrize("backend", [mariadb_param])
async def test_mariadb_tables_compare_ids_byte_for_byte_and_keep_microseconds(
    db_url: str,
) -> None:
    """Every table a migration creates (new ones too) must pass
    `**table_options(op.get_context().dialect)` and give its times DATETIME(6)
    (store.types.UtcColumn): a server default collation would make `User1` and `user1`
    one pair, and a plain DATETIME drops the microseconds."""
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            tables = (
                await conn.exec_driver_sql(
                    "SELECT table_name, table_collation FROM information_schema.tables "
                    "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' "
                    "AND table_name <> 'alembic_version'"
                )
            ).all()
            columns = (
                await conn.exec_driver_sql(
                    "SELECT table_name, column_name, data_type, datetime_precision, "
                    "collation_name FROM information_schema.columns "
                    "WHERE table_schema = DATABASE() AND table_name <> 'alembic_version'"
                )
            ).all()
    finally:
        await engine.dispose()
    assert {name for name, _ in tables} >= SCHEMA_TABLES
    assert {(name, collation) for name, collation in tables if collation != MARIADB_IDS} == set()
    times = [c for c in columns if c[2] in ("datetime", "timestamp")]
    assert times and [c for c in times if c[2] != "datetime" or c[3] != 6] == []
    texts = [c for c in columns if c[4] is not None]
    assert texts and [c for c in texts if c[4] != MARIADB_IDS] == []
