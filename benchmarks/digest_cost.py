"""The cost of a run's digest (the hash chain's step when a run ends), for N checks.

    .venv/bin/python benchmarks/digest_cost.py [--rows 20000,1000000] [--backend sqlite,postgresql]
                                               [--rate CHECKS_PER_SECOND] [--other-runs K]

For each backend and size it builds a database with one finished run of N checks by SQL
(no Python rows: `generate_series` on PostgreSQL, a recursive CTE on SQLite), optionally K
other runs of the same size beside it, then times the digest exactly as a run's end takes
it (store/evidence.py `run_digest` inside a transaction, rows read in canonical order
through the driver) and prints rows/s, seconds, the process's peak RSS, and, given the
tool's measured rate (`--rate`, checks/s of `audit-job run`), the digest's share of that
run's duration. PostgreSQL (AUDIT_JOB_BENCH_PG_ADMIN, default
postgresql://postgres@127.0.0.1:5432/test) is used when reachable; a scratch database is
created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audit_job.store import evidence, migrate
from audit_job.store.engine import create_engine

RUN_SQL = """
INSERT INTO audit_run (id, trigger, status, started_at, finished_at, total, active,
                       inactive, failed, retries, throttled)
VALUES (:id, 'manual', 'succeeded', :at, :at, :n, 0, 0, 0, 0, 0)
"""
# Answers shaped like real ones: 20 apps, 2 % errors with a message, a third active.
PG_CHECKS = """
INSERT INTO session_check (run_id, app_id, user_id, status, active, checked_at, attempts,
                           http_status, status_code, api_code, message, request_id, latency_ms)
SELECT {run}, 'app-' || lpad((g % 20)::text, 2, '0'),
       'user-' || lpad((g / 20)::text, 7, '0') || '@example.com',
       CASE WHEN g % 50 = 0 THEN 'error' WHEN g % 3 = 0 THEN 'active' ELSE 'inactive' END,
       CASE WHEN g % 50 = 0 THEN NULL ELSE g % 3 = 0 END,
       timestamptz '2026-12-01 00:00:00+00' + g * interval '97 microseconds',
       1 + (g % 7 = 0)::int, 200, CASE WHEN g % 50 = 0 THEN 404 ELSE 200 END,
       CASE WHEN g % 50 = 0 THEN 2004 ELSE 200 END,
       CASE WHEN g % 50 = 0 THEN 'user not found' END,
       substr(md5(g::text), 1, 12), 5 + g % 40
FROM generate_series(0, {n} - 1) AS g
"""
SQLITE_CHECKS = """
INSERT INTO session_check (run_id, app_id, user_id, status, active, checked_at, attempts,
                           http_status, status_code, api_code, message, request_id, latency_ms)
WITH RECURSIVE g(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM g WHERE x < {n} - 1)
SELECT {run}, printf('app-%02d', x % 20), printf('user-%07d@example.com', x / 20),
       CASE WHEN x % 50 = 0 THEN 'error' WHEN x % 3 = 0 THEN 'active' ELSE 'inactive' END,
       CASE WHEN x % 50 = 0 THEN NULL ELSE x % 3 = 0 END,
       printf('2026-12-01 %02d:%02d:%02d.%06d', (x / 3600) % 24, (x / 60) % 60, x % 60,
              (x * 7919) % 1000000),
       1 + (x % 7 = 0), 200, CASE WHEN x % 50 = 0 THEN 404 ELSE 200 END,
       CASE WHEN x % 50 = 0 THEN 2004 ELSE 200 END,
       CASE WHEN x % 50 = 0 THEN 'user not found' END,
       printf('%08x-%03x', (x * 2654435761) % 4294967296, x % 4096), 5 + x % 40
FROM g
"""


def pg_admin_dsn() -> str:
    return os.environ.get("AUDIT_JOB_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")


async def pg_admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(pg_admin_dsn(), timeout=3)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def build(url: str, dialect: str, rows: int, other_runs: int) -> None:
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
        from datetime import UTC, datetime

        at = datetime(2026, 12, 1, tzinfo=UTC)
        sql = PG_CHECKS if dialect == "postgresql" else SQLITE_CHECKS
        for run in range(1, other_runs + 2):
            async with engine.begin() as conn:
                await conn.execute(text(RUN_SQL), {"id": run, "at": at, "n": rows})
                await conn.execute(text(sql.format(run=run, n=rows)))
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE"))
    finally:
        await engine.dispose()


async def time_digest(url: str, run_id: int) -> tuple[float, int, str]:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            run = await evidence.run_row(conn, run_id)
            assert run is not None
            started = time.perf_counter()
            digest, count = await evidence.run_digest(
                conn, run_id, evidence.header_line(run, 1, None)
            )
            return time.perf_counter() - started, count, digest
    finally:
        await engine.dispose()


async def measure(dialect: str, rows: int, other_runs: int) -> tuple[float, int, str, float]:
    if dialect == "sqlite":
        with tempfile.TemporaryDirectory(prefix="digest-bench-") as folder:
            url = f"sqlite+aiosqlite:///{folder}/bench.db"
            await build(url, dialect, rows, other_runs)
            seconds, count, digest = await time_digest(url, other_runs + 1)
            return seconds, count, digest, peak_rss_mb()
    name = f"audit_job_digest_{uuid.uuid4().hex[:10]}"
    await pg_admin(f'CREATE DATABASE "{name}"')
    try:
        admin = pg_admin_dsn().rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        url = f"{admin}/{name}"
        await build(url, dialect, rows, other_runs)
        seconds, count, digest = await time_digest(url, other_runs + 1)
        return seconds, count, digest, peak_rss_mb()
    finally:
        await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def pg_reachable() -> bool:
    try:
        await pg_admin("SELECT 1")
    except Exception as exc:
        print(f"PostgreSQL unreachable ({exc}): skipped", file=sys.stderr)
        return False
    return True


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="20000,1000000", help="comma-separated sizes")
    parser.add_argument("--backend", default="sqlite,postgresql")
    parser.add_argument("--rate", type=float, default=None, help="audit-job run's checks/s")
    parser.add_argument("--other-runs", type=int, default=0, help="runs of the same size beside")
    args = parser.parse_args()
    sizes = [int(size) for size in args.rows.split(",")]
    backends = args.backend.split(",")
    if "postgresql" in backends and not await pg_reachable():
        backends.remove("postgresql")
    print(f"{'backend':<11} {'rows':>9} {'seconds':>8} {'rows/s':>10} {'peak MB':>8}  share")
    for dialect in backends:
        for rows in sizes:
            seconds, count, _digest, peak = await measure(dialect, rows, args.other_runs)
            assert count == rows, (count, rows)
            share = ""
            if args.rate:
                run_seconds = rows / args.rate
                share = f"{seconds / run_seconds:.1%} of a {run_seconds:.0f} s run"
                share += f" at {args.rate:,.0f}/s"
            print(
                f"{dialect:<11} {rows:>9,} {seconds:>8.2f} {rows / seconds:>10,.0f} "
                f"{peak:>8.1f}  {share}",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
