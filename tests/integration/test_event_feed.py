"""The event feed as committed results feed it, on SQLite, PostgreSQL and MariaDB: runs
against the emulator (flips, expectations of pairs and a [[policy]], violations opened and
resolved, the run's end), and the batch writer's guarantees (a batch written twice, a row
another worker answered, error answers, a rolled-back batch), the run's end written by
several finishers, and the schedule's slot rows.

Expected events are worked out from the tables they report on (session_check,
audit_violation, audit_run) and, for violations, from the expectations the test set."""

from __future__ import annotations

import asyncio
import fnmatch
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from feedcheck import answers_of, as_implied, feed, fetch, implied_events, payload
from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.commands import run as service
from audit_job.commands.run.snapshot import take_snapshot
from audit_job.config import (
    AuditSettings,
    AuthingSettings,
    DatabaseSettings,
    LoadedConfig,
    PolicySettings,
    Settings,
    SourceSettings,
)
from audit_job.emulator import Emulator, EmulatorOptions, truth
from audit_job.models import CheckResult, CheckStatus, RunStatus
from audit_job.policy import PolicySet, contradicts
from audit_job.store import bulk, leader, results, runs, snapshot
from audit_job.store import events as event_store
from audit_job.store import targets as target_store
from audit_job.store.engine import opened
from audit_job.store.results import Judging
from audit_job.store.tables import (
    audit_run,
    audit_violation,
    session_check,
    session_state,
)

SEED = 11
Pair = tuple[str, str]
POLICY = PolicySettings(
    name="hr-leavers", apps=["hr-*"], users="user-00[0-2]*", expect="inactive", severity="critical"
)


async def open_violations(url: str) -> dict[Pair, Any]:
    rows = await fetch(url, select(audit_violation).where(audit_violation.c.is_open.is_not(None)))
    return {(r.app_id, r.user_id): r for r in rows}


# -- runs against the emulator ---------------------------------------------------------------


def sample_pairs() -> list[Pair]:
    pairs = [(app, f"user-{n:04d}") for app in ("hr-eu", "crm", "payroll") for n in range(40)]
    return [*pairs, ("crm", "missing-0001"), ("hr-eu", "missing-0002")]  # always errors


def config_for(url: str, emulator_url: str) -> LoadedConfig:
    settings = Settings(
        database=DatabaseSettings(url=url),
        authing=AuthingSettings(
            host=emulator_url, access_key_id="ak-demo", access_key_secret=SecretStr("sk-demo")
        ),
        audit=AuditSettings(concurrency=8, rate_per_second=5000, batch_size=9),
        policy=[POLICY],
    )
    return LoadedConfig(settings, "test", [])


def expected_open(answers: dict[Pair, bool | None], own: dict[Pair, str]) -> set[Pair]:
    """The pairs whose answer contradicts what they are expected to be: their own
    expectation, else the policy (checked here with fnmatch, not with policy.py)."""
    wrong = set()
    for (app, user), active in answers.items():
        expect = own.get((app, user), "any")
        if expect == "any" and fnmatch.fnmatchcase(app, "hr-*"):
            expect = "inactive" if fnmatch.fnmatchcase(user, "user-00[0-2]*") else "any"
        if active is not None and contradicts(expect, active):
            wrong.add((app, user))
    return wrong


@pytest.mark.timeout(90)
async def test_two_runs_emit_exactly_what_the_tables_imply(db_url: str, tmp_path: Path) -> None:
    pairs = sample_pairs()
    own = {("crm", f"user-{n:04d}"): "inactive" for n in range(0, 12)}
    own.update({("crm", f"user-{n:04d}"): "active" for n in range(12, 24)})
    async with opened(db_url) as engine, engine.begin() as conn:
        await target_store.save_batch(conn, [(a, u, None) for a, u in pairs])
        for (app, user), expect in own.items():
            await target_store.set_expect(conn, app, user, expect)
    async with Emulator(EmulatorOptions(seed=SEED)) as emu:
        loaded = config_for(db_url, emu.url)
        first = await service.execute(loaded, service.RunRequest(), asyncio.Event())
        after_first = await open_violations(db_url)
        assert set(after_first) == expected_open(await answers_of(db_url, first.run_id), own)
        # the test means something: violations from the pairs' own and from the policy
        assert {v.source for v in after_first.values()} == {"target", "policy hr-leavers"}
        assert {v.severity for v in after_first.values() if v.app_id == "hr-eu"} == {"critical"}

        # Between the runs: every third answered pair flips, and one pair's expectation
        # of its own is lifted (an open violation of it resolves, flipped or not).
        answered = sorted(p for p in pairs if truth(*p, SEED) is not None)
        flipped = answered[::3]
        truth_file = tmp_path / "truth.csv"
        truth_file.write_text(
            "".join(f"{a},{u},{str(not truth(a, u, SEED)).lower()}\n" for a, u in flipped),
            encoding="utf-8",
        )
        emu.configure(truth_file=str(truth_file))
        lifted = next(p for p in sorted(after_first) if p[0] == "crm")
        async with opened(db_url) as engine, engine.begin() as conn:
            await target_store.set_expect(conn, *lifted, "any")
        own.pop(lifted)
        second = await service.execute(loaded, service.RunRequest(), asyncio.Event())

    second_answers = await answers_of(db_url, second.run_id)
    after_second = await open_violations(db_url)
    assert set(after_second) == expected_open(second_answers, own)
    assert lifted not in after_second
    got = await feed(db_url)
    assert sorted(map(as_implied, got), key=repr) == await implied_events(
        db_url, [first.run_id, second.run_id]
    )
    kinds = {e.type for e in got}
    assert {"session.activated", "session.deactivated", "violation.opened"} <= kinds
    assert "violation.resolved" in kinds
    # Ids increase along the commits: each run's end comes after all of its answers' events.
    for run_id in (first.run_id, second.run_id):
        ids = [e.id for e in got if e.run_id == run_id]
        (end,) = [e for e in got if e.run_id == run_id and e.type == "run.finished"]
        assert end.id == max(ids)
        data = payload(end)
        assert data["status"] == "completed_with_errors" and data["error"] == 2
        assert data["open_violations"] == len(
            after_first if run_id == first.run_id else after_second
        )
    for event in got:
        if event.type.startswith("session."):
            data = payload(event)
            assert data["previous_run_id"] == first.run_id
            assert (
                data["active"] is (event.type == "session.activated") is not data["previous_active"]
            )


# -- the batch writer ------------------------------------------------------------------------

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
USERS = ["u1", "u2", "u3", "u4", "u5"]


def result(active: bool | None, at: datetime) -> CheckResult:
    status = {True: CheckStatus.ACTIVE, False: CheckStatus.INACTIVE, None: CheckStatus.ERROR}
    return CheckResult(status[active], active, at, 1, 200, 200, 200, None, "req", 3)


async def new_run(engine: AsyncEngine, expects: dict[str, str | None]) -> list[bulk.Claimed]:
    """A run whose snapshot holds the users of `expects` (with their own expectations);
    its pending rows as claims hand them out."""
    async with engine.begin() as conn:
        run_id = await runs.create_run(conn, trigger="manual")
        await snapshot.add_snapshot_rows(
            conn, run_id, [("payroll", user, expect) for user, expect in expects.items()]
        )
    async with engine.connect() as conn:
        rows = await bulk.pending_rows(conn, run_id, 0, None)
    assert {(row[2], row[3]) for row in rows} == {
        (u, None if e in (None, "any") else e) for u, e in expects.items()
    }
    return rows


def batch(rows: list[bulk.Claimed], answers: dict[str, bool | None], at: datetime) -> list[Any]:
    return [
        (i, app, user, result(answers[user], at), e) for i, app, user, e in rows if user in answers
    ]


async def write(
    engine: AsyncEngine,
    rows: list[bulk.Claimed],
    answers: dict[str, bool | None],
    at: datetime,
    judging: Judging | None = None,
) -> int:
    run_id = await run_of(engine, rows)
    async with engine.begin() as conn:
        return await results.write_results(conn, run_id, batch(rows, answers, at), judging=judging)


async def run_of(engine: AsyncEngine, rows: list[bulk.Claimed]) -> int:
    async with engine.connect() as conn:
        stmt = select(session_check.c.run_id).where(session_check.c.id == rows[0][0])
        return int((await conn.execute(stmt)).scalar_one())


async def snapshot_of(url: str) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    """Everything a batch may write."""
    return (
        await feed(url),
        await fetch(url, select(audit_violation).order_by(audit_violation.c.id)),
        await fetch(url, select(session_state).order_by(session_state.c.user_id)),
        await fetch(url, select(session_check).order_by(session_check.c.id)),
    )


async def test_a_batch_written_twice_or_answered_elsewhere_emits_nothing_more(db_url: str) -> None:
    async with opened(db_url) as engine:
        first = await new_run(engine, dict.fromkeys(USERS))
        assert await write(engine, first, dict.fromkeys(USERS, True), T0) == 0  # first answers
        rows = await new_run(
            engine, {"u1": None, "u2": None, "u3": "inactive", "u4": "active", "u5": None}
        )
        answers = {"u1": False, "u2": True, "u3": True, "u4": True}  # u5 still pending
        # None open when the run started (maybe_open False): the probe of open violations
        # is skipped, flips and the contradiction are not.
        quiet = Judging(PolicySet(), maybe_open=False)
        assert await write(engine, rows, answers, T0 + timedelta(hours=1), quiet) == 2
        written = await snapshot_of(db_url)
        assert [(e.type, e.user_id) for e in written[0]] == [
            ("session.deactivated", "u1"),
            ("violation.opened", "u3"),
        ]
        # The same batch again (a replay after an unknown commit outcome): nothing.
        assert await write(engine, rows, answers, T0 + timedelta(hours=1), quiet) == 0
        assert await snapshot_of(db_url) == written
        # Other answers for the same rows (another worker answered them first) in a batch
        # with one row still pending: only that one counts, and session_state keeps what
        # session_check holds.
        other = {"u1": True, "u2": False, "u3": False, "u4": False, "u5": False}
        assert await write(engine, rows, other, T0 + timedelta(hours=2)) == 1
        after = await snapshot_of(db_url)
    assert after[1] == written[1]
    assert [(e.type, e.user_id) for e in after[0][len(written[0]) :]] == [
        ("session.deactivated", "u5")
    ]
    states = {r.user_id: (r.active, r.checked_at) for r in after[2]}
    assert states == {
        "u1": (False, T0 + timedelta(hours=1)),
        "u2": (True, T0 + timedelta(hours=1)),
        "u3": (True, T0 + timedelta(hours=1)),
        "u4": (True, T0 + timedelta(hours=1)),
        "u5": (False, T0 + timedelta(hours=2)),
    }


async def test_errors_neither_open_nor_resolve_and_a_resolution_commits_with_its_result(
    db_url: str,
) -> None:
    async with opened(db_url) as engine:
        first = await new_run(engine, {"u1": "inactive", "u2": "active"})
        assert await write(engine, first, {"u1": True, "u2": True}, T0) == 1  # u1 opens
        (violation,) = (await open_violations(db_url)).values()
        errors = await new_run(engine, {"u1": "inactive", "u2": "active"})
        before = await snapshot_of(db_url)
        assert await write(engine, errors, {"u1": None, "u2": None}, T0 + timedelta(hours=1)) == 0
        after = await snapshot_of(db_url)
        assert after[:3] == before[:3]  # no event, the violation open, no state moved
        errors_run = await run_of(engine, errors)
        assert {r.status for r in after[3] if r.run_id == errors_run} == {"error"}

        third = await new_run(engine, {"u1": "inactive", "u2": "active"})
        run_id = await run_of(engine, third)
        logged_out = batch(third, {"u1": False, "u2": False}, T0 + timedelta(hours=2))
        pending = await snapshot_of(db_url)
        # Rolled back: the result is not committed, so neither is the resolution or an event.
        async with engine.connect() as conn:
            transaction = await conn.begin()
            assert await results.write_results(conn, run_id, logged_out) == 4
            await transaction.rollback()
        assert await snapshot_of(db_url) == pending
        async with engine.begin() as conn:
            assert await results.write_results(conn, run_id, logged_out) == 4
    got = await feed(db_url)
    assert [(e.type, e.user_id, e.run_id) for e in got[len(after[0]) :]] == [
        ("session.deactivated", "u1", run_id),
        ("session.deactivated", "u2", run_id),
        ("violation.resolved", "u1", run_id),
        ("violation.opened", "u2", run_id),
    ]
    (resolved,) = await fetch(
        db_url, select(audit_violation).where(audit_violation.c.id == violation.id)
    )
    (check,) = await fetch(
        db_url,
        select(session_check).where(
            session_check.c.run_id == run_id, session_check.c.user_id == "u1"
        ),
    )
    assert (resolved.is_open, resolved.resolved_run_id) == (None, run_id)
    assert resolved.resolved_at == check.checked_at == T0 + timedelta(hours=2)
    assert payload(got[-2])["violation_id"] == violation.id


# -- a run's end and the schedule's slots ----------------------------------------------------


async def test_a_run_ends_once_however_many_close_it(db_url: str) -> None:
    async with opened(db_url) as engine:
        rows = await new_run(engine, {"u1": None, "u2": None})
        run_id = await run_of(engine, rows)
        await write(engine, rows, {"u1": True, "u2": None}, T0)
        counts = {"pending": 0, "active": 1, "inactive": 0, "error": 1}

        async def close(status: RunStatus) -> None:
            async with engine.begin() as conn:
                await runs.finish_run(conn, run_id, status, "done", counts)

        # Two processes closing the run at once (separate engines: separate connections).
        async with opened(db_url) as other:

            async def close_elsewhere() -> None:
                async with other.begin() as conn:
                    await runs.finish_run(
                        conn, run_id, RunStatus.COMPLETED_WITH_ERRORS, "done", counts
                    )

            await asyncio.gather(close(RunStatus.COMPLETED_WITH_ERRORS), close_elsewhere())
        await close(RunStatus.COMPLETED_WITH_ERRORS)  # and once more, later
        ends = [e for e in await feed(db_url) if e.type.startswith("run.")]
        assert [(e.type, e.run_id) for e in ends] == [("run.finished", run_id)]
        data = payload(ends[0])
        assert (data["total"], data["active"], data["error"], data["status"]) == (
            2,
            1,
            1,
            "completed_with_errors",
        )
        # Interrupted is no end; failed is, and a resumed run that then succeeds ends again.
        async with engine.begin() as conn:
            await runs.take_over(conn, run_id)
        await close(RunStatus.INTERRUPTED)
        await close(RunStatus.FAILED)
        await close(RunStatus.FAILED)
        async with engine.begin() as conn:
            await runs.take_over(conn, run_id)
        await close(RunStatus.SUCCEEDED)
    ends = [e for e in await feed(db_url) if e.type.startswith("run.")]
    assert [e.type for e in ends] == ["run.finished", "run.failed", "run.finished"]


async def test_slot_rows_emit_their_events_once(db_url: str) -> None:
    slot = T0 + timedelta(minutes=5)
    async with opened(db_url) as engine:
        async with engine.begin() as conn:
            running = await runs.create_run(conn, trigger="schedule", scheduled_for=T0)
        for _ in range(2):  # the second time another node accounted for the slots already
            async with engine.begin() as conn:
                await leader.record_slot(
                    conn, slot, RunStatus.SKIPPED_OVERLAP, "a run was still going", epoch=1
                )
                await leader.record_slot(
                    conn,
                    slot + timedelta(minutes=3),
                    RunStatus.MISSED,
                    "3 slots missed",
                    epoch=1,
                    missed=(slot + timedelta(minutes=1), slot + timedelta(minutes=3), 3),
                )
        # A slot row that is rolled back (a fenced-out node) emits nothing either.
        async with engine.connect() as conn:
            transaction = await conn.begin()
            await leader.record_slot(
                conn, slot + timedelta(minutes=9), RunStatus.SKIPPED_OVERLAP, "x", epoch=1
            )
            await transaction.rollback()
    rows = {r.status: r for r in await fetch(db_url, select(audit_run))}
    got = await feed(db_url)
    assert [(e.type, e.run_id) for e in got] == [
        ("slot.skipped", rows["skipped_overlap"].id),
        ("slot.missed", rows["missed"].id),
    ]
    assert payload(got[0]) == {
        "scheduled_for": event_store.iso(slot),
        "running_run_id": running,
        "message": "a run was still going",
    }
    assert payload(got[1])["missed_count"] == 3
    assert payload(got[1])["missed_first"] == event_store.iso(slot + timedelta(minutes=1))


# -- where a pair's own expectation comes from -----------------------------------------------


async def test_a_source_querys_expect_column_is_each_pairs_own_expectation(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [("src", "u1", "inactive"), ("src", "u2", " Active "), ("src", "u3", None)]
    rows += [("src", "u4", ""), ("src", "u5", "maybe")]  # empty: none; a wrong value: skipped
    async with opened(db_url) as engine:
        async with engine.begin() as conn:
            await conn.execute(
                text("CREATE TABLE people (app VARCHAR(32), uid VARCHAR(32), want VARCHAR(16))")
            )
            await conn.execute(
                text("INSERT INTO people (app, uid, want) VALUES (:a, :u, :w)"),
                [{"a": a, "u": u, "w": w} for a, u, w in rows],
            )
            run_id = await runs.create_run(conn, trigger="manual")
        settings = Settings(
            database=DatabaseSettings(url=db_url),
            source=SourceSettings(
                query="SELECT app AS app_id, uid AS user_id, want AS expect FROM people"
            ),
        )
        await take_snapshot(engine, run_id, settings, None, None)
    checks = await fetch(db_url, select(session_check).where(session_check.c.run_id == run_id))
    assert {r.user_id: r.expect for r in checks} == {
        "u1": "inactive",
        "u2": "active",
        "u3": None,
        "u4": None,
    }
    assert "row 5 skipped: expect must be any, active or inactive" in caplog.text


async def test_the_snapshot_keeps_each_targets_expectation_as_it_was(db_url: str) -> None:
    async with opened(db_url) as engine:
        async with engine.begin() as conn:
            await target_store.save_batch(conn, [("app", u, None) for u in USERS])
            await target_store.set_expect(conn, "app", "u1", "inactive")
            await target_store.set_expect(conn, "app", "u2", "active")
            run_id = await runs.create_run(conn, trigger="manual")
            await snapshot.snapshot_targets(conn, run_id, None, None)
            await target_store.set_expect(conn, "app", None, "inactive")  # later: not this run
        async with engine.connect() as conn:
            claimed = await bulk.pending_rows(conn, run_id, 0, None)
    assert {user: expect for _id, _app, user, expect in claimed} == {
        "u1": "inactive",
        "u2": "active",
        "u3": None,
        "u4": None,
        "u5": None,
    }
