"""The batch write path on MySQL/MariaDB with each maintained asyncio driver.

Figures, not assertions. For asyncmy and aiomysql (SQLAlchemy's two async MySQL dialects)
it writes the answers of a snapshot in batches of 500, exactly as a run does
(store.runs.write_results: the session_check UPDATE and the session_state upsert in one
transaction per batch), and prints the client's CPU seconds and the wall seconds per
10,000 answers, median of interleaved rounds, with the ratio against asyncmy. For the
session_state upsert it also measures the alternative of a multi-row `INSERT .. VALUES ..
ON DUPLICATE KEY UPDATE` (the driver's executemany rewrite) against the JSON_TABLE
statement the store uses.

    .venv/bin/python benchmarks/mysql_drivers.py [--rows 20000] [--rounds 3]

A scratch database on AUDIT_JOB_BENCH_MARIADB (default root@127.0.0.1:3306) is made and
dropped per round. A driver that is not installed is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.models import CheckResult, CheckStatus
from audit_job.store import bulk, migrate
from audit_job.store import runs as store
from audit_job.store.engine import create_engine
from audit_job.store.tables import audit_target, session_check

SERVER = os.environ.get("AUDIT_JOB_BENCH_MARIADB", "root@127.0.0.1:3306")
BATCH = 500

_VALUES_STATE = """
INSERT INTO session_state (app_id, user_id, active, checked_at, changed_at, run_id)
VALUES (%s, %s, %s, %s, %s, %s)
ON DUPLICATE KEY UPDATE
    changed_at = IF(VALUES(checked_at) >= checked_at AND VALUES(active) <> active,
                    VALUES(checked_at), changed_at),
    active = IF(VALUES(checked_at) >= checked_at, VALUES(active), active),
    run_id = IF(VALUES(checked_at) >= checked_at, VALUES(run_id), run_id),
    checked_at = GREATEST(VALUES(checked_at), checked_at)
"""


async def _values_state(conn: AsyncConnection, rows: list[bulk.StateRow]) -> None:
    await conn.exec_driver_sql(_VALUES_STATE, rows)


async def _server(driver: str, sql: str) -> None:
    engine = create_engine(f"mysql+{driver}://{SERVER}/test")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def one_round(driver: str, rows: int, state_writer: str) -> tuple[float, float, float]:
    """(client CPU s, wall s) per 10,000 answers written, and the client CPU s per 10,000
    checks read back (every column, as `results` exports them)."""
    name = f"audit_job_bench_{uuid.uuid4().hex[:8]}"
    await _server(driver, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    engine = create_engine(f"mysql+{driver}://{SERVER}/{name}")
    try:
        await migrate.upgrade(engine)
        now = datetime.now(UTC)
        async with engine.begin() as conn:
            for start in range(0, rows, 5000):
                await conn.execute(
                    insert(audit_target),
                    [
                        {"app_id": f"app-{i % 7}", "user_id": f"user-{i:07d}", "enabled": True}
                        | {"created_at": now}
                        for i in range(start, min(rows, start + 5000))
                    ],
                )
        async with engine.begin() as conn:
            run_id = await store.create_run(conn, trigger="manual")
            await store.snapshot_targets(conn, run_id, None, None)
        async with engine.connect() as conn:
            pending = await bulk.pending_rows(conn, run_id, 0, None)
        original = bulk.upsert_states
        if state_writer == "values":
            bulk.upsert_states = _values_state  # type: ignore[assignment]
        try:
            cpu, wall = time.process_time(), time.perf_counter()
            for start in range(0, len(pending), BATCH):
                batch = [
                    (row_id, app, user, _answer(row_id, now), expect)
                    for row_id, app, user, expect in pending[start : start + BATCH]
                ]
                async with engine.begin() as conn:
                    await store.write_results(conn, run_id, batch)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            bulk.upsert_states = original  # type: ignore[assignment]
        async with engine.connect() as conn:
            left = await bulk.pending_rows(conn, run_id, 0, 1)
            states = (await conn.execute(text("SELECT COUNT(*) FROM session_state"))).scalar()
            read = time.process_time()
            got = len((await conn.execute(select(session_check))).all())
            read = time.process_time() - read
        assert not left and states == rows == got, (left, states, got)
    finally:
        await engine.dispose()
        await _server(driver, f"DROP DATABASE IF EXISTS `{name}`")
    scale = 10_000 / rows
    return cpu * scale, wall * scale, read * scale


def _answer(row_id: int, now: datetime) -> CheckResult:
    active = row_id % 3 == 0
    return CheckResult(
        status=CheckStatus.ACTIVE if active else CheckStatus.INACTIVE,
        active=active,
        checked_at=now + timedelta(microseconds=row_id),
        attempts=1,
        http_status=200,
        status_code=200,
        api_code=200,
        message="success",
        request_id=f"req-{row_id}",
        latency_ms=12,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    drivers = [d for d in ("asyncmy", "aiomysql") if importlib.util.find_spec(d)]
    variants = [(d, "json_table") for d in drivers] + [(d, "values") for d in drivers]
    figures: dict[tuple[str, str], list[tuple[float, float, float]]] = {v: [] for v in variants}
    for number in range(args.rounds):
        order = variants if number % 2 == 0 else variants[::-1]
        for variant in order:
            figures[variant].append(await one_round(variant[0], args.rows, variant[1]))
    print(f"{args.rows} answers per round, batches of {BATCH}, {args.rounds} rounds; per 10,000:")
    base = statistics.median(m[0] for m in figures[variants[0]])
    for (driver, writer), measured in figures.items():
        cpu, wall, read = (statistics.median(m[i] for m in measured) for i in range(3))
        print(
            f"  {driver:9} state upsert {writer:10}  write: client CPU {cpu:5.2f} s"
            f" ({cpu / base:4.2f}x {variants[0][0]} json_table), wall {wall:5.2f} s;"
            f"  read back: client CPU {read:5.2f} s"
        )


if __name__ == "__main__":
    asyncio.run(main())
