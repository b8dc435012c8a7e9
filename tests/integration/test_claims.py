"""Range claims of a shared run (store/claims.py) against real PostgreSQL and MariaDB:
disjoint while their holders live, taken over when a holder is gone, released on the way
out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from pgsupport import server_backends
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.models import CheckResult, CheckStatus
from audit_job.store import results, runs, snapshot, workers
from audit_job.store.engine import create_engine
from audit_job.store.tables import audit_claim, audit_target, audit_worker

DEAD_AFTER = 30.0
PAIRS = 50


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def run_id(engine: AsyncEngine) -> int:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            insert(audit_target),
            [
                {"app_id": "app", "user_id": f"user-{n:03d}", "enabled": True, "created_at": now}
                for n in range(PAIRS)
            ],
        )
        run = await runs.create_run(conn, trigger="manual")
        await snapshot.snapshot_targets(conn, run, None, None)
        for worker in ("w1", "w2"):
            await workers.register_worker(conn, worker, run, 4)
    return run


async def claim(engine: AsyncEngine, run_id: int, worker: str, limit: int) -> list[int]:
    async with engine.begin() as conn:
        rows = await workers.claim_pending(conn, run_id, worker, DEAD_AFTER, limit)
    return [row[0] for row in rows]


async def answer(engine: AsyncEngine, run_id: int, ids: list[int]) -> None:
    now = datetime.now(UTC)
    result = CheckResult(CheckStatus.ACTIVE, True, now, 1, 200, 200, 200, None, "r", 1)
    async with engine.begin() as conn:
        await results.write_results(
            conn, run_id, [(i, "app", f"id-{i}", result, None) for i in ids]
        )


async def ranges(engine: AsyncEngine, run_id: int) -> list[tuple[str | None, int, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(audit_claim.c.worker_id, audit_claim.c.first_id, audit_claim.c.last_id)
            .where(audit_claim.c.run_id == run_id)
            .order_by(audit_claim.c.first_id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def let_die(engine: AsyncEngine, worker: str) -> None:
    """The heartbeat of `worker` falls behind the liveness cutoff."""
    old = datetime.now(UTC) - timedelta(seconds=DEAD_AFTER + 5)
    async with engine.begin() as conn:
        await conn.execute(
            update(audit_worker).where(audit_worker.c.worker_id == worker).values(heartbeat_at=old)
        )


@server_backends
async def test_live_workers_get_disjoint_rows_that_cover_the_run(
    engine: AsyncEngine, run_id: int
) -> None:
    seen: list[int] = []
    turn = 0
    while batch := await claim(engine, run_id, ("w1", "w2")[turn % 2], 7):
        assert len(batch) <= 7
        seen += batch
        turn += 1
    assert len(seen) == len(set(seen)) == PAIRS
    assert turn == 8  # 50 rows in claims of 7
    held = await ranges(engine, run_id)
    assert [worker for worker, _, _ in held] == ["w1", "w2"] * 4
    assert all(a_last < b_first for (_, _, a_last), (_, b_first, _) in pairwise(held))


@server_backends
async def test_a_dead_workers_unanswered_rows_are_taken_over_once(
    engine: AsyncEngine, run_id: int
) -> None:
    first = await claim(engine, run_id, "w1", 10)
    second = await claim(engine, run_id, "w1", 10)
    await answer(engine, run_id, first + second[:4])  # its first range answered in full
    await let_die(engine, "w1")

    taken = await claim(engine, run_id, "w2", 10)
    assert taken == second[4:]  # only what it left unanswered, in id order
    held = await ranges(engine, run_id)
    assert held == [("w2", second[0], second[-1])]  # the answered range is gone
    assert await claim(engine, run_id, "w2", 10) not in (taken, [])  # next: fresh rows


@server_backends
async def test_a_live_workers_rows_are_never_taken(engine: AsyncEngine, run_id: int) -> None:
    mine = await claim(engine, run_id, "w1", 10)
    others = await claim(engine, run_id, "w2", 100)
    assert set(mine).isdisjoint(others)
    assert await claim(engine, run_id, "w2", 100) == []  # w1 holds the rest, and lives
    async with engine.connect() as conn:
        assert await workers.pending_elsewhere(conn, run_id, "w2")  # w1's ten are pending
        assert await workers.pending_elsewhere(conn, run_id, "w1")  # and w2's forty
    await answer(engine, run_id, others)
    async with engine.connect() as conn:
        assert not await workers.pending_elsewhere(conn, run_id, "w1")  # only its own remain


@server_backends
async def test_released_rows_go_to_the_next_claimer(engine: AsyncEngine, run_id: int) -> None:
    left = await claim(engine, run_id, "w1", 10)
    async with engine.begin() as conn:
        await workers.unregister_worker(conn, run_id, "w1")
    assert await ranges(engine, run_id) == [(None, left[0], left[-1])]
    assert await claim(engine, run_id, "w2", 10) == left


@server_backends
async def test_a_dead_process_on_this_host_loses_its_rows_at_once(
    engine: AsyncEngine, run_id: int
) -> None:
    left = await claim(engine, run_id, "w1", 10)
    async with engine.begin() as conn:  # heartbeat fresh, but no such process here
        await conn.execute(
            update(audit_worker).where(audit_worker.c.worker_id == "w1").values(pid=2**22 + 1)
        )
    assert await claim(engine, run_id, "w2", 10) == left


@server_backends
async def test_taking_over_stops_near_the_limit(engine: AsyncEngine, run_id: int) -> None:
    held = [await claim(engine, run_id, "w1", 5) for _ in range(3)]
    await let_die(engine, "w1")
    assert await claim(engine, run_id, "w2", 5) == held[0]  # one range, not all three
    assert [w for w, _, _ in await ranges(engine, run_id)] == ["w2", "w1", "w1"]
    assert await claim(engine, run_id, "w2", 8) == held[1] + held[2]  # whole ranges
