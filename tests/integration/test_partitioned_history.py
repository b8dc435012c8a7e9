"""History by run: one partition per run on PostgreSQL (prune drops it), a plain table on
SQLite and MariaDB (prune deletes rows); per-run summary rows and recorded changes that
reports read; migration 0011 converting a populated table both ways without losing or
changing a row."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from reporting_scenario import Scenario, build_scenario
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.commands import prune as prune_service
from audit_job.commands import report as service
from audit_job.config import DatabaseSettings, Settings
from audit_job.store import migrate, partitions, run_changes
from audit_job.store import runs as run_store
from audit_job.store.engine import create_engine, opened
from audit_job.store.reports import changes as change_store
from audit_job.store.tables import (
    audit_run,
    audit_run_change,
    audit_run_summary,
    audit_target,
    session_check,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def scenario(db_url: str, tmp_path: Path) -> Scenario:
    return await build_scenario(db_url, tmp_path)


async def _has_table(conn: AsyncConnection, name: str) -> bool:
    found = await conn.execute(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name})
    return bool(found.scalar())


async def _group_by(conn: AsyncConnection, run_id: int) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    rows = await conn.execute(
        select(session_check.c.app_id, session_check.c.status, func.count())
        .where(session_check.c.run_id == run_id)
        .group_by(session_check.c.app_id, session_check.c.status)
    )
    for app, status, n in rows:
        per_app = counts.setdefault(
            app, dict.fromkeys(("active", "inactive", "error", "pending"), 0)
        )
        per_app[status] = n
    return counts


async def test_prune_drops_the_runs_partition_on_postgresql(scenario: Scenario) -> None:
    first, second = scenario.run_ids
    async with opened(scenario.url) as engine:
        async with engine.begin() as conn:
            partitioned = await partitions.is_partitioned(conn)
            assert partitioned == (conn.dialect.name == "postgresql")
            if partitioned:  # every run's rows in its own partition, none in the default
                for run_id in (first, second):
                    assert await _has_table(conn, partitions.partition_name(run_id))
                stray = await conn.execute(text("SELECT count(*) FROM session_check_default"))
                assert stray.scalar_one() == 0
            count = await conn.execute(select(func.count()).where(session_check.c.run_id == first))
            first_count = count.scalar_one()
            kept = (
                await conn.execute(select(session_check).where(session_check.c.run_id == second))
            ).all()
            old = datetime.now(UTC) - timedelta(days=40)
            await conn.execute(update(audit_run).values(started_at=old))
        done = await prune_service.prune(engine, 30)
        assert done.per_run == {first: first_count}
        async with engine.connect() as conn:
            if partitioned:
                assert not await _has_table(conn, partitions.partition_name(first))
            left = await conn.execute(select(func.count()).where(session_check.c.run_id == first))
            assert left.scalar_one() == 0
            assert (
                await conn.execute(select(session_check).where(session_check.c.run_id == second))
            ).all() == kept
            pruned = await conn.execute(
                select(audit_run.c.pruned_at).where(audit_run.c.id == first)
            )
            assert pruned.scalar_one() is not None
            summary = await conn.execute(
                select(func.count()).where(audit_run_summary.c.run_id == first)
            )
            assert summary.scalar_one() == 0  # a pruned run reports nothing, as before
        assert (await prune_service.prune(engine, 30)).checks == 0


async def test_summary_rows_match_the_checks_and_a_resumed_run_counts_live(
    scenario: Scenario,
) -> None:
    first, second = scenario.run_ids
    settings = Settings(database=DatabaseSettings(url=scenario.url))
    async with opened(scenario.url) as engine:
        async with engine.connect() as conn:
            for run_id in (first, second):
                rows = await conn.execute(
                    select(audit_run_summary).where(audit_run_summary.c.run_id == run_id)
                )
                written = {
                    r.app_id: {s: getattr(r, s) for s in ("active", "inactive", "error", "pending")}
                    for r in rows
                }
                assert written and written == await _group_by(conn, run_id)
        # Resumed: its summary goes, and the report counts what the rows say now.
        async with engine.begin() as conn:
            await run_store.take_over(conn, second)
            await conn.execute(
                update(session_check)
                .where(session_check.c.run_id == second, session_check.c.status == "active")
                .values(status="pending", active=None)
            )
        rep = await service.report(settings, str(second))
        async with engine.connect() as conn:
            live = await _group_by(conn, second)
            left = await conn.execute(
                select(func.count()).where(audit_run_summary.c.run_id == second)
            )
            assert left.scalar_one() == 0
        assert {row["app_id"]: row["pending"] for row in rep.rows} == {
            app: c["pending"] for app, c in live.items()
        }
        assert all(row["active"] == 0 for row in rep.rows)


RUNS, PER_RUN = 3, 250


async def _checksum(conn: AsyncConnection) -> tuple[int, str]:
    """Every row of session_check, every column, in id order: a count and a digest."""
    rows = (await conn.execute(select(session_check).order_by(session_check.c.id))).all()
    digest = hashlib.sha256()
    for row in rows:
        values = dict(row._mapping)
        if values["checked_at"] is not None:  # the same instant whatever the driver's zone
            values["checked_at"] = values["checked_at"].astimezone(UTC).isoformat()
        values["active"] = None if values["active"] is None else bool(values["active"])
        digest.update(repr(sorted(values.items())).encode())
    return len(rows), digest.hexdigest()


async def _populate(conn: AsyncConnection) -> None:
    at = datetime(2026, 12, 1, 9, tzinfo=UTC)
    for run in range(1, RUNS + 1):
        status = "running" if run == RUNS else "succeeded"
        await conn.execute(
            insert(audit_run).values(
                id=run,
                trigger="manual",
                status=status,
                started_at=at,
                total=PER_RUN,
                active=0,
                inactive=0,
                failed=0,
                retries=0,
                throttled=0,
            )
        )
        await conn.execute(
            insert(session_check),
            [
                {
                    "run_id": run,
                    "app_id": f"app-{i % 3}",
                    "user_id": f"user-{i:04d}",
                    "status": ("active", "inactive", "error", "pending")[(i + run) % 4],
                    "active": (None, True, False)[i % 3],
                    "checked_at": at + timedelta(microseconds=i * 977),
                    "attempts": i % 5,
                    "message": f"m{i}" if i % 7 == 0 else None,
                    "latency_ms": i,
                }
                for i in range(PER_RUN)
            ],
        )


async def test_migration_0011_converts_a_populated_table_both_ways(empty_db_url: str) -> None:
    engine = create_engine(empty_db_url)
    try:
        await migrate.upgrade(engine, "0009")
        async with engine.begin() as conn:
            await _populate(conn)
        async with engine.connect() as conn:
            before = await _checksum(conn)
        assert before[0] == RUNS * PER_RUN
        await migrate.upgrade(engine, "0011")
        async with engine.begin() as conn:
            assert await _checksum(conn) == before
            postgres = conn.dialect.name == "postgresql"
            assert await partitions.is_partitioned(conn) == postgres
            if postgres:
                for run in range(1, RUNS + 1):
                    assert await _has_table(conn, partitions.partition_name(run))
                stray = await conn.execute(text("SELECT count(*) FROM session_check_default"))
                assert stray.scalar_one() == 0
            summary = await conn.execute(
                select(audit_run_summary.c.run_id, func.sum(audit_run_summary.c.total)).group_by(
                    audit_run_summary.c.run_id
                )
            )
            assert dict(summary.all()) == {r: PER_RUN for r in range(1, RUNS)}  # not running
            # The id sequence carries on past the copied rows.
            new = await conn.execute(
                insert(session_check)
                .values(run_id=RUNS, app_id="app-0", user_id="late", status="pending", attempts=0)
                .returning(session_check.c.id)
            )
            assert new.scalar_one() > RUNS * PER_RUN
        async with engine.connect() as conn:
            after = await _checksum(conn)
        await migrate.downgrade(engine, "0009")
        async with engine.connect() as conn:
            assert await _checksum(conn) == after
            assert not await partitions.is_partitioned(conn)
    finally:
        await engine.dispose()


async def test_recorded_changes_are_the_live_comparison(scenario: Scenario) -> None:
    first, second = scenario.run_ids
    async with opened(scenario.url) as engine:
        async with engine.connect() as conn:
            assert await run_changes.recorded_base(conn, second) == first
            assert await run_changes.recorded_base(conn, first) is None  # no run before it
            kept = (await conn.execute(select(func.count()).select_from(audit_run_change))).scalar()
            assert kept and kept > 0
        async with engine.begin() as conn:  # a pair gone is asked about when read
            await conn.execute(
                update(audit_target)
                .where(audit_target.c.app_id == scenario.added[0])
                .values(enabled=False)
            )
        recorded = [row async for row in change_store.stream_changes(engine, second, first, 2)]
        async with engine.begin() as conn:
            await run_changes.forget_changes(conn, second)
            assert await run_changes.recorded_base(conn, second) is None
        live = [row async for row in change_store.stream_changes(engine, second, first, 2)]
        assert recorded == live
        assert {row["change"] for row in live} >= {"newly_seen", "gone_from_targets"}
        # The base run ending again (a resumed run) drops what was compared with it.
        async with engine.begin() as conn:
            await run_changes.record_changes(conn, second)
            assert await run_changes.recorded_base(conn, second) == first
            await run_store.take_over(conn, first)
            assert await run_changes.recorded_base(conn, second) is None
