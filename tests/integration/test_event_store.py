"""The feed's table and the sinks' cursors on SQLite and PostgreSQL: ids in commit order,
reading windows, pruning that never loses an undelivered event nor reuses an id, leases
and compare-and-set cursors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pgsupport import only_pg
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.commands import events as event_commands
from audit_job.config import Settings
from audit_job.models import EventType
from audit_job.store import events, sinks
from audit_job.store.engine import create_engine
from audit_job.store.tables import audit_event, audit_sink

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    yield engine
    await engine.dispose()


def new(kind: EventType = EventType.RUN_FINISHED, run_id: int = 1) -> events.NewEvent:
    return events.NewEvent(kind.value, run_id, None, None, {"n": run_id})


async def append(engine: AsyncEngine, count: int, *, now: datetime = T0) -> None:
    async with engine.begin() as conn:
        await events.append(conn, [new(run_id=i) for i in range(count)], now=now)


@only_pg
async def test_ids_commit_in_id_order(engine: AsyncEngine) -> None:
    """A transaction that took an id first and commits last must not let a reader pass
    over it: the second appender waits for the first to finish (PostgreSQL's advisory
    lock), so a committed id always has every smaller one behind it."""
    first_in = asyncio.Event()
    release_first = asyncio.Event()

    async def slow() -> None:
        async with engine.begin() as conn:
            await events.append(conn, [new(run_id=1)])
            first_in.set()
            await release_first.wait()

    async def fast() -> None:
        await first_in.wait()
        async with engine.begin() as conn:
            await events.append(conn, [new(run_id=2)])

    slow_task = asyncio.create_task(slow())
    fast_task = asyncio.create_task(fast())
    await first_in.wait()
    await asyncio.sleep(0.5)
    assert not fast_task.done(), "the second appender did not wait for the first"
    async with engine.connect() as conn:
        assert await events.head(conn) == 0  # nothing visible yet: no id to pass over
    release_first.set()
    await asyncio.gather(slow_task, fast_task)
    async with engine.connect() as conn:
        rows = await events.read_after(conn, 0)
    assert [r.run_id for r in rows] == [1, 2] and rows[0].id < rows[1].id


async def test_reading_windows_types_and_since(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await events.append(
            conn, [new(EventType.RUN_FINISHED, 1), new(EventType.SLOT_MISSED, 2)], now=T0
        )
        await events.append(conn, [new(EventType.RUN_FAILED, 3)], now=T0 + timedelta(hours=1))
    async with engine.connect() as conn:
        top = await events.head(conn)
        everything = await events.read_after(conn, 0)
        assert [r.id for r in everything][-1] == top and len(everything) == 3
        assert [r.run_id for r in await events.read_after(conn, everything[0].id)] == [2, 3]
        assert [r.run_id for r in await events.read_after(conn, 0, limit=1)] == [1]
        assert [r.run_id for r in await events.read_after(conn, 0, upto_id=everything[1].id)] == [
            1,
            2,
        ]
        runs = frozenset({"run.finished", "run.failed"})
        assert [r.run_id for r in await events.read_after(conn, 0, types=runs)] == [1, 3]
        assert await events.count_after(conn, 0, types=runs) == 2
        after = await events.first_id_since(conn, T0 + timedelta(minutes=30))
        assert [r.run_id for r in await events.read_after(conn, after)] == [3]


async def test_prune_keeps_what_a_sink_has_not_delivered_and_the_newest(
    engine: AsyncEngine,
) -> None:
    await append(engine, 10, now=T0)
    settings = Settings.model_validate(
        {
            "sink": [
                {"name": "fast", "type": "jsonl", "path": "/tmp/x.jsonl"},
                {"name": "slow", "type": "jsonl", "path": "/tmp/y.jsonl"},
            ]
        }
    )
    async with engine.begin() as conn:
        await sinks.ensure(conn, ["fast", "slow"])
        await conn.execute(
            update(audit_sink).where(audit_sink.c.name == "fast").values(last_event_id=10)
        )
        await conn.execute(
            update(audit_sink).where(audit_sink.c.name == "slow").values(last_event_id=4)
        )
    later = T0 + timedelta(days=40)
    dry = await event_commands.prune(engine, settings, dry_run=True, now=later)
    assert dry.deleted == 4
    done = await event_commands.prune(engine, settings, now=later, batch=3)
    assert done.deleted == 4
    async with engine.connect() as conn:
        assert [r.id for r in await events.read_after(conn, 0)] == [5, 6, 7, 8, 9, 10]
    # young events stay whatever the cursors say
    assert (await event_commands.prune(engine, settings, now=T0 + timedelta(days=1))).deleted == 0
    # every sink has delivered everything: all but the newest go
    async with engine.begin() as conn:
        await conn.execute(update(audit_sink).values(last_event_id=10))
    assert (await event_commands.prune(engine, settings, now=later)).deleted == 5
    async with engine.connect() as conn:
        assert [r.id for r in await events.read_after(conn, 0)] == [10]


async def test_ids_are_never_reused_after_pruning(engine: AsyncEngine) -> None:
    """A sink's cursor at N must never see a new event with an id <= N."""
    await append(engine, 3)
    async with engine.begin() as conn:
        await conn.execute(audit_event.delete())  # even with every row gone
    await append(engine, 1)
    async with engine.connect() as conn:
        assert [r.id for r in await events.read_after(conn, 0)] == [4]


async def test_a_lease_admits_one_deliverer_and_the_cursor_moves_by_compare_and_set(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await sinks.ensure(conn, ["siem"])
        await sinks.ensure(conn, ["siem"])  # idempotent
        one = await sinks.acquire(conn, "siem", "host:1:a", 30, now=T0)
        assert one is not None and one.last_event_id == 0
        assert (
            await sinks.acquire(conn, "siem", "host:2:b", 30, now=T0 + timedelta(seconds=10))
            is None
        )
        # the holder moves it from where it read it; a stale compare fails
        assert await sinks.advance(conn, "siem", "host:1:a", from_id=0, to_id=5, delivered=5)
        assert not await sinks.advance(conn, "siem", "host:1:a", from_id=0, to_id=9, delivered=4)
        # an expired lease is taken over; the old holder can no longer move the cursor
        two = await sinks.acquire(conn, "siem", "host:2:b", 30, now=T0 + timedelta(seconds=31))
        assert two is not None and two.last_event_id == 5
        assert not await sinks.advance(conn, "siem", "host:1:a", from_id=5, to_id=9, delivered=4)
        assert not await sinks.renew(conn, "siem", "host:1:a", 30)
        await sinks.release(conn, "siem", "host:2:b")
        state = await sinks.get(conn, "siem")
    assert state is not None and (state.last_event_id, state.delivered, state.lease_owner) == (
        5,
        5,
        None,
    )


async def test_a_dead_local_holder_is_taken_over_at_once(engine: AsyncEngine) -> None:
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_owner = f"{sinks.HOST}:{gone.stdout.strip()}:dead"
    async with engine.begin() as conn:
        await sinks.ensure(conn, ["siem"])
        assert await sinks.acquire(conn, "siem", dead_owner, 3600) is not None
        assert await sinks.acquire(conn, "siem", sinks.new_owner(), 30) is not None


async def test_failing_and_retry(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await sinks.ensure(conn, ["siem"])
        await sinks.record_retry(conn, "siem", "HTTP 503")
        await sinks.mark_failing(conn, "siem", "HTTP 400: " + "x" * 1000)
        state = await sinks.get(conn, "siem")
        assert state is not None and state.failing and state.failures == 1 and state.retries == 1
        assert state.last_error is not None and len(state.last_error) <= 512
        assert await sinks.clear_failing(conn, "siem")
        state = await sinks.get(conn, "siem")
        assert state is not None and not state.failing and state.last_event_id == 0
        assert await sinks.lowest_cursor(conn, ["siem", "never-delivered"]) == 0
        assert await sinks.lowest_cursor(conn, []) is None
