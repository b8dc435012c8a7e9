"""Violations and flip events per batch, on SQLite and PostgreSQL (store/violations.py,
store/events.py, store/outbox.py), through the real statements."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.models import RunStatus
from audit_job.store import events, flips, outbox, violation_reads
from audit_job.store.dialect import upsert_state
from audit_job.store.engine import create_engine
from audit_job.store.tables import audit_event, audit_run, audit_violation, session_state
from audit_job.store.violations import JudgedAnswer

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    async with engine.begin() as conn:
        for _ in range(6):
            await conn.execute(
                insert(audit_run).values(
                    trigger="manual", status=RunStatus.SUCCEEDED.value, started_at=T0
                )
            )
    yield engine
    await engine.dispose()


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


async def write_batch(engine: AsyncEngine, answers: list[JudgedAnswer]) -> int:
    """What the batch writer does with a batch's final answers, in one transaction: the
    feed first (it compares with session_state before the upsert), then the upsert."""
    async with engine.begin() as conn:
        appended = await outbox.record_answers(conn, answers)
        states = [
            {
                "app_id": a.app_id,
                "user_id": a.user_id,
                "active": a.active,
                "checked_at": a.checked_at,
                "changed_at": a.checked_at,
                "run_id": a.run_id,
            }
            for a in answers
            if a.active is not None
        ]
        if states:
            await conn.execute(upsert_state(session_state, conn.dialect.name), states)
    return appended


async def feed(engine: AsyncEngine) -> list[tuple[str, str | None, dict[str, object]]]:
    async with engine.connect() as conn:
        rows = await events.read_after(conn, 0)
    return [(r.type, r.user_id, json.loads(r.payload)) for r in rows]


async def violation_rows(engine: AsyncEngine) -> list[dict[str, object]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(audit_violation).order_by(audit_violation.c.id))
        return [dict(r) for r in result.mappings()]


def answer(
    user: str,
    active: bool | None,
    hours: float,
    run: int,
    expect: str = "any",
    severity: str = "warning",
) -> JudgedAnswer:
    return JudgedAnswer(
        "payroll", user, active, at(hours), run, expect, severity, "policy offboarded"
    )


async def test_a_violation_opens_stays_open_across_runs_and_resolves(engine: AsyncEngine) -> None:
    await write_batch(engine, [answer("u1", True, 0, 1, "inactive", "critical")])
    opened = await violation_rows(engine)
    assert len(opened) == 1
    assert {
        k: opened[0][k]
        for k in ("user_id", "expected", "observed", "severity", "opened_run_id", "resolved_at")
    } == {
        "user_id": "u1",
        "expected": "inactive",
        "observed": "active",
        "severity": "critical",
        "opened_run_id": 1,
        "resolved_at": None,
    }
    # still contradicting in runs 2 and 3: the same violation, no new event
    await write_batch(engine, [answer("u1", True, 1, 2, "inactive", "critical")])
    await write_batch(engine, [answer("u1", True, 2, 3, "inactive", "critical")])
    assert len(await violation_rows(engine)) == 1
    # logged out in run 4: resolved by the check
    await write_batch(engine, [answer("u1", False, 3, 4, "inactive", "critical")])
    rows = await violation_rows(engine)
    assert len(rows) == 1 and rows[0]["is_open"] is None
    assert (rows[0]["resolved_run_id"], rows[0]["resolved_at"], rows[0]["resolution"]) == (
        4,
        at(3),
        "check",
    )
    types = [t for t, _, _ in await feed(engine)]
    assert types == ["violation.opened", "session.deactivated", "violation.resolved"]
    opened_event = (await feed(engine))[0][2]
    assert opened_event == {
        "violation_id": rows[0]["id"],
        "expected": "inactive",
        "observed": "active",
        "severity": "critical",
        "source": "policy offboarded",
        "opened_at": "2026-12-01T09:00:00.000000+00:00",
    }
    # active again: a new violation, the old one stays resolved
    await write_batch(engine, [answer("u1", True, 4, 5, "inactive", "critical")])
    rows = await violation_rows(engine)
    assert [r["is_open"] for r in rows] == [None, True]


async def test_an_error_answer_writes_nothing(engine: AsyncEngine) -> None:
    await write_batch(engine, [answer("u1", True, 0, 1, "inactive")])
    before = (await violation_rows(engine), await feed(engine))
    assert (
        await write_batch(
            engine, [answer("u1", None, 1, 2, "inactive"), answer("u2", None, 1, 2, "active")]
        )
        == 0
    )
    assert (await violation_rows(engine), await feed(engine)) == before


async def test_any_resolves_an_open_violation_and_a_new_expectation_replaces_it(
    engine: AsyncEngine,
) -> None:
    await write_batch(
        engine, [answer("u1", True, 0, 1, "inactive"), answer("u2", True, 0, 1, "inactive")]
    )
    # u1's expectation is lifted (any); u2's turns into `active` while it is inactive
    await write_batch(
        engine, [answer("u1", True, 1, 2, "any"), answer("u2", False, 1, 2, "active")]
    )
    rows = await violation_rows(engine)
    by_user = {(r["user_id"], r["expected"]): r for r in rows}
    assert by_user[("u1", "inactive")]["is_open"] is None
    assert by_user[("u2", "inactive")]["is_open"] is None
    assert (
        by_user[("u2", "active")]["is_open"] is True
        and by_user[("u2", "active")]["observed"] == "inactive"
    )
    resolved = [d for t, _, d in await feed(engine) if t == "violation.resolved"]
    assert {(d["expect"], d["active"]) for d in resolved} == {("any", True), ("active", False)}


async def test_nothing_expected_nothing_open_writes_nothing(engine: AsyncEngine) -> None:
    batch = [answer(f"u{i}", i % 2 == 0, 0, 1) for i in range(500)]
    assert await write_batch(engine, batch) == 0  # first answers: no flips either
    assert await violation_rows(engine) == [] and await feed(engine) == []


async def test_at_most_one_open_violation_per_pair_is_the_databases_rule(
    engine: AsyncEngine,
) -> None:
    row = {
        "app_id": "payroll",
        "user_id": "u1",
        "expected": "inactive",
        "observed": "active",
        "severity": "warning",
        "source": "target",
        "opened_run_id": 1,
        "opened_at": T0,
        "is_open": True,
    }
    async with engine.begin() as conn:
        await conn.execute(insert(audit_violation).values(**row))
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(insert(audit_violation).values(**row))
    # resolved ones do not count: any number of them beside one open
    resolved = {
        **row,
        "is_open": None,
        "resolved_at": at(1),
        "resolution": "check",
        "resolved_run_id": 2,
    }
    async with engine.begin() as conn:
        await conn.execute(insert(audit_violation), [resolved, resolved])
    # and a row cannot be open and resolved at once (MariaDB reports a failed CHECK as an
    # operational error, 4025)
    refused = OperationalError if engine.dialect.name in ("mysql", "mariadb") else IntegrityError
    with pytest.raises(refused):
        async with engine.begin() as conn:
            await conn.execute(
                insert(audit_violation).values(**{**row, "user_id": "u9", "resolved_at": at(2)})
            )


async def test_a_late_answer_from_an_older_run_changes_nothing(engine: AsyncEngine) -> None:
    """A resumed run finishing after a newer one: its older answers neither open nor
    resolve violations, and make no flip (session_state keeps the newer answer too)."""
    await write_batch(
        engine, [answer("u1", True, 5, 3, "inactive"), answer("u2", False, 5, 3, "inactive")]
    )
    before = (await violation_rows(engine), await feed(engine))
    await write_batch(
        engine, [answer("u1", False, 1, 2, "inactive"), answer("u2", True, 1, 2, "inactive")]
    )
    assert (await violation_rows(engine), await feed(engine)) == before


async def test_a_replayed_batch_is_not_judged_twice_by_the_caller_contract(
    engine: AsyncEngine,
) -> None:
    """judge() is called only for rows that turned final; even called again with the same
    answers after the upsert, it invents nothing (the violation is open, the state equal)."""
    batch = [answer("u1", True, 0, 1, "inactive"), answer("u2", False, 0, 1, "inactive")]
    await write_batch(engine, batch)
    first = (await violation_rows(engine), await feed(engine))
    await write_batch(engine, batch)
    assert (await violation_rows(engine), await feed(engine)) == first


async def test_flip_events_against_the_previous_state(engine: AsyncEngine) -> None:
    await write_batch(
        engine, [answer("u1", False, 0, 1), answer("u2", True, 0, 1), answer("u3", True, 0, 1)]
    )
    assert await feed(engine) == []  # first answers are no flips
    appended = await write_batch(
        engine,
        [
            answer("u1", True, 1, 2),
            answer("u2", False, 1, 2),
            answer("u3", True, 1, 2),
            answer("u4", True, 1, 2),
        ],
    )
    assert appended == 2
    got = await feed(engine)
    assert [(t, u) for t, u, _ in got] == [
        ("session.activated", "u1"),
        ("session.deactivated", "u2"),
    ]
    assert got[0][2] == {
        "active": True,
        "checked_at": "2026-12-01T10:00:00.000000+00:00",
        "previous_active": False,
        "previous_checked_at": "2026-12-01T09:00:00.000000+00:00",
        "previous_since": "2026-12-01T09:00:00.000000+00:00",
        "previous_run_id": 1,
    }
    async with engine.connect() as conn:
        rows = await events.read_after(conn, 0)
    assert [(r.run_id, r.app_id) for r in rows] == [(2, "payroll"), (2, "payroll")]
    assert rows[0].id < rows[1].id


async def test_the_flip_statement_agrees_with_the_portable_rule(engine: AsyncEngine) -> None:
    """The dialect's INSERT .. SELECT and the Core fallback (other databases) give the
    same events for the same batch, times and booleans included."""
    await write_batch(engine, [answer(f"u{i}", i % 3 == 0, 0, 1) for i in range(30)])
    batch = [answer(f"u{i}", i % 2 == 0, 2, 2) for i in range(40)]
    async with engine.begin() as conn:
        sql_count = await flips.append_flips(conn, batch, now=at(3))
        sql_rows = await events.read_after(conn, 0)
        await conn.execute(audit_event.delete())
        portable = await flips._append_flips_portable(conn, events.latest_per_pair(batch), at(3))
        portable_rows = await events.read_after(conn, 0)
    assert sql_count == portable == len(sql_rows) > 0
    assert [(r.type, r.user_id, json.loads(r.payload)) for r in sql_rows] == [
        (r.type, r.user_id, json.loads(r.payload)) for r in portable_rows
    ]


async def test_open_counts_for_the_metric(engine: AsyncEngine) -> None:
    await write_batch(
        engine,
        [
            answer("u1", True, 0, 1, "inactive", "critical"),
            answer("u2", True, 0, 1, "inactive", "critical"),
            answer("u3", False, 0, 1, "active"),
        ],
    )
    async with engine.connect() as conn:
        assert await violation_reads.open_counts(conn) == {
            ("payroll", "critical"): 2,
            ("payroll", "warning"): 1,
        }
        assert await violation_reads.count_open(conn) == 3
    async with engine.begin() as conn:
        await conn.execute(
            update(audit_violation)
            .where(audit_violation.c.user_id == "u3")
            .values(is_open=None, resolved_at=at(1), resolution="check", resolved_run_id=2)
        )
    async with engine.connect() as conn:
        assert await violation_reads.open_counts(conn) == {("payroll", "critical"): 2}


async def test_a_run_that_started_with_none_open_skips_the_lookup(engine: AsyncEngine) -> None:
    """maybe_open=False (no violation was open when the run started): a batch without a
    contradiction writes nothing and asks nothing; a contradiction still opens one."""
    async with engine.connect() as conn:
        assert not await violation_reads.any_open(conn)
    async with engine.begin() as conn:
        quiet = [answer(f"u{i}", True, 0, 1) for i in range(10)]
        assert await outbox.record_answers(conn, quiet, maybe_open=False) == 0
        loud = [answer("u1", True, 0, 1, "inactive")]
        assert await outbox.record_answers(conn, loud, maybe_open=False) == 1
    async with engine.connect() as conn:
        assert await violation_reads.any_open(conn)
