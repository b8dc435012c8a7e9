"""The batch write path's rules, on every backend (store/bulk.py has one statement per
dialect): an answer is written once, `session_state.changed_at` moves only when `active`
flips, an older answer never overwrites a newer one, ids compare byte for byte, and
times keep their microseconds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.models import CheckResult, CheckStatus
from audit_job.store import bulk, results, runs, snapshot
from audit_job.store import targets as target_store
from audit_job.store.engine import create_engine
from audit_job.store.tables import session_check, session_state

# Distinct ids everywhere: case and a trailing space matter (MySQL's default collations
# would make these one pair).
USERS = ("User1", "user1", "user1 ")
T0 = datetime(2026, 11, 26, 9, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    async with engine.begin() as conn:
        await target_store.save_batch(conn, [("app", user, None) for user in USERS])
    yield engine
    await engine.dispose()


def answer(active: bool | None, at: datetime, message: str | None = None) -> CheckResult:
    status = {True: CheckStatus.ACTIVE, False: CheckStatus.INACTIVE, None: CheckStatus.ERROR}
    return CheckResult(status[active], active, at, 1, 200, 200, 200, message, "req", 7)


async def run_with(engine: AsyncEngine, answers: dict[str, CheckResult]) -> int:
    """A run whose snapshot holds every target, answered as `answers` says (by user)."""
    async with engine.begin() as conn:
        run_id = await runs.create_run(conn, trigger="manual")
        await snapshot.snapshot_targets(conn, run_id, None, None)
    async with engine.begin() as conn:
        pending = await bulk.pending_rows(conn, run_id, 0, None)
        batch = [(i, a, u, answers[u], e) for i, a, u, e in pending if u in answers]
        await results.write_results(conn, run_id, batch)
    return run_id


async def states(engine: AsyncEngine) -> dict[str, tuple[bool, datetime, datetime, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(session_state))
        return {r.user_id: (r.active, r.checked_at, r.changed_at, r.run_id) for r in rows}


async def test_state_moves_forward_only_and_changes_only_on_a_flip(engine: AsyncEngine) -> None:
    t1, t2, t3 = (T0 + timedelta(minutes=n, microseconds=n) for n in (1, 2, 3))
    first = await run_with(engine, {"User1": answer(True, T0), "user1": answer(False, T0)})
    assert await states(engine) == {
        "User1": (True, T0, T0, first),
        "user1": (False, T0, T0, first),
    }
    # Same answer, later: checked_at and run move, changed_at stays.
    same = await run_with(engine, {"User1": answer(True, t1), "user1 ": answer(True, t1)})
    # A flip: changed_at moves to the answer's time.
    flip = await run_with(engine, {"User1": answer(False, t3), "user1": answer(True, t2)})
    assert await states(engine) == {
        "User1": (False, t3, t3, flip),
        "user1": (True, t2, t2, flip),
        "user1 ": (True, t1, t1, same),
    }
    # An older run finishing late (a resume) flips nothing back, nor moves anything.
    await run_with(engine, {"User1": answer(True, t1), "user1": answer(False, T0)})
    # An error is no answer: the state stays.
    await run_with(engine, {"User1": answer(None, t3 + timedelta(seconds=1))})
    # An equal time counts as newer, as on every backend (`>=`).
    tie = await run_with(engine, {"user1 ": answer(False, t1)})
    assert await states(engine) == {
        "User1": (False, t3, t3, flip),
        "user1": (True, t2, t2, flip),
        "user1 ": (False, t1, t1, tie),
    }


async def test_an_answer_is_written_once_with_its_microseconds_and_text(
    engine: AsyncEngine,
) -> None:
    message = "用户不存在 😀 \u00e9"
    run_id = await run_with(engine, {"User1": answer(None, T0, message)})
    async with engine.begin() as conn:  # a replay of the same rows changes nothing
        pending = await conn.execute(
            select(session_check.c.id, session_check.c.app_id, session_check.c.user_id).where(
                session_check.c.run_id == run_id
            )
        )
        replay = [(i, a, u, answer(True, T0 + timedelta(hours=1)), None) for i, a, u in pending]
        await results.write_results(conn, run_id, replay)
    async with engine.connect() as conn:
        rows = {
            r.user_id: r
            for r in await conn.execute(
                select(session_check).where(session_check.c.run_id == run_id)
            )
        }
    assert set(rows) == set(USERS)
    written = rows["User1"]
    assert (written.status, written.active, written.checked_at) == ("error", None, T0)
    assert written.checked_at.microsecond == 123456 and written.checked_at.tzinfo is not None
    assert (written.message, written.request_id, written.latency_ms) == (message, "req", 7)
    for user in ("user1", "user1 "):  # the replay answered what was still pending
        assert rows[user].status == "active" and rows[user].active is True
