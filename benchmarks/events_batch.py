"""What the event feed and violations add to one batch write: `outbox.record_answers` for
500 answers, on SQLite and PostgreSQL, beside the session_state upsert every batch already
does (the baseline in the same run).

    .venv/bin/python benchmarks/events_batch.py [--batches 40] [--pairs 50000]

Scenarios: nothing expected and nothing open (the common case), 5 % of the answers flip,
10 % contradict an expectation (violations open), and those 10 % resolve. Each batch runs
in a transaction that is rolled back, so every batch meets the same table; figures are
the median over the batches, in milliseconds per 500-row batch.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, text

from audit_job.store import bulk, migrate, outbox
from audit_job.store.engine import create_engine
from audit_job.store.tables import session_state
from audit_job.store.violations import JudgedAnswer

BATCH = 500
T0 = datetime(2026, 12, 1, tzinfo=UTC)
PG_ADMIN = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def answers(start: int, *, flip_every: int = 0, expect_every: int = 0) -> list[JudgedAnswer]:
    """500 answers; the seeded state is active for even users. `flip_every`: every n-th
    answer flips; `expect_every`: every n-th is expected to be the opposite of what it is."""
    made = []
    for i in range(start, start + BATCH):
        active = i % 2 == 0
        if flip_every and i % flip_every == 0:
            active = not active
        expect = "any"
        if expect_every and i % expect_every == 0:
            expect = "inactive" if active else "active"
        at = T0 + timedelta(hours=1)
        made.append(JudgedAnswer("app", f"user-{i:07d}", active, at, 2, expect, "warning", "bench"))
    return made


async def seed(url: str, pairs: int) -> None:
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
        async with engine.begin() as conn:
            for first in range(0, pairs, 5000):
                await conn.execute(
                    insert(session_state),
                    [
                        {
                            "app_id": "app",
                            "user_id": f"user-{i:07d}",
                            "active": i % 2 == 0,
                            "checked_at": T0,
                            "changed_at": T0,
                            "run_id": 1,
                        }
                        for i in range(first, min(first + 5000, pairs))
                    ],
                )
    finally:
        await engine.dispose()


async def timed(  # type: ignore[no-untyped-def]
    engine,
    batches: int,
    pairs: int,
    make,
    *,
    baseline: bool = False,
    prepare=None,
    maybe_open: bool = True,
) -> float:
    costs = []
    for n in range(batches):
        start = (n * BATCH) % (pairs - BATCH)
        rows = make(start)
        async with engine.connect() as conn:
            transaction = await conn.begin()
            if prepare is not None:
                await prepare(conn, start)
            await conn.execute(text("SELECT 1"))
            began = time.perf_counter()
            if baseline:
                stamp = bulk.sqlite_time if conn.dialect.name == "sqlite" else (lambda t: t)
                await bulk.upsert_states(
                    conn,
                    [
                        (a.app_id, a.user_id, a.active, stamp(a.checked_at), stamp(a.checked_at), 2)
                        for a in rows
                    ],
                )
            else:
                await outbox.record_answers(conn, rows, maybe_open=maybe_open)
            costs.append(time.perf_counter() - began)
            await transaction.rollback()
    return statistics.median(costs) * 1000


async def measure(name: str, url: str, batches: int, pairs: int) -> None:
    await seed(url, pairs)
    engine = create_engine(url)
    try:

        async def open_first(conn, start):  # type: ignore[no-untyped-def]
            await outbox.record_answers(conn, answers(start, expect_every=10))

        figures = {
            "state upsert (baseline)": await timed(engine, batches, pairs, answers, baseline=True),
            "nothing expected or open": await timed(engine, batches, pairs, answers),
            "  the same, run knows none open": await timed(
                engine, batches, pairs, answers, maybe_open=False
            ),
            "5 % flip": await timed(engine, batches, pairs, lambda s: answers(s, flip_every=20)),
            "10 % open a violation": await timed(
                engine, batches, pairs, lambda s: answers(s, expect_every=10)
            ),
            "10 % resolve one": await timed(
                engine,
                batches,
                pairs,
                lambda s: [
                    a._replace(active=not a.active) if int(a.user_id[-7:]) % 10 == 0 else a
                    for a in answers(s, expect_every=10)
                ],
                prepare=open_first,
            ),
        }
    finally:
        await engine.dispose()
    base = figures["state upsert (baseline)"]
    print(f"\n{name}: ms per {BATCH}-answer batch (median of {batches})")
    for label, ms in figures.items():
        ratio = "" if label.startswith("state") else f"  ({ms / base:.2f}x the state upsert)"
        print(f"  {label:<32} {ms:7.3f}{ratio}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=50_000)
    args = parser.parse_args()
    with TemporaryDirectory() as folder:
        await measure("SQLite", f"sqlite+aiosqlite:///{folder}/bench.db", args.batches, args.pairs)
    try:
        import asyncpg

        admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test", timeout=5)
    except Exception as exc:  # no PostgreSQL here: say so, measure what we can
        print(f"\nPostgreSQL: skipped ({exc})")
        return
    name = "audit_job_bench_events"
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
        await measure(
            "PostgreSQL",
            f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}",
            args.batches,
            args.pairs,
        )
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
