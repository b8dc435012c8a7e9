"""`audit-job daemon` with `[discovery] sync_before_run` and `[remediation] auto`, as real
subprocesses against an in-process emulator with a generated directory, on the three
backends.

The truth is the emulator's: which pairs its directory lists (discovery) and which of them
it answers active (remediation); kicks are counted by the emulator (`kicks_per_user`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from test_daemon import Daemons, assert_every_slot_once, daemons, eventually, metric, rows

from audit_job.emulator import Emulator
from audit_job.emulator.directory import user_id as directory_user
from audit_job.store import targets as target_store
from audit_job.store.engine import opened
from audit_job.store.tables import audit_target, audit_violation, remediation, session_check

APPS = ["app-001", "app-002"]
USERS = 12
POLICY = '\n[[policy]]\nname = "offboarded"\napps = "app-001"\nexpect = "inactive"\n'
STARTS_LOUDLY = "[remediation] auto = true: this daemon KICKS users"
__all__ = ["daemons"]  # the fixture, from test_daemon


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(seed=5, users=40, apps=APPS, login_share=1.0, delay_ms=2) as emu:
        yield emu


def listed_pairs(emu: Emulator) -> set[tuple[str, str]]:
    """Every (app, user) of the emulator's directory as it is now."""
    directory = emu.directory
    return {
        (app, directory_user(index))
        for index in range(1, directory.count + 1)
        if directory.exists(index)
        for app in APPS
    }


async def checked_pairs(url: str, run_id: int) -> set[tuple[str, str]]:
    c = session_check.c
    async with opened(url) as engine, engine.connect() as conn:
        found = await conn.execute(select(c.app_id, c.user_id).where(c.run_id == run_id))
        return {(r.app_id, r.user_id) for r in found}


async def a_run_of(url: str, pairs: set[tuple[str, str]], after: int = 0) -> int | None:
    """The first succeeded slot run after run `after` that audited exactly `pairs`."""
    for run in sorted(await rows(url), key=lambda r: r.id):
        slot_run = run.status == "succeeded" and run.scheduled_for is not None
        if slot_run and run.id > after and await checked_pairs(url, run.id) == pairs:
            return int(run.id)
    return None


async def test_sync_before_run_audits_the_directory_as_it_changes(
    db_url: str, daemons: Daemons, tmp_path: Any
) -> None:
    async with Emulator(seed=5, users=USERS, apps=APPS, delay_ms=2) as emu:
        tail = '\n[discovery]\napps = ["app-*"]\nsync_before_run = true\n'
        daemon = await daemons.start(db_url, emu.url, tail=tail, interval_seconds=2)
        first = listed_pairs(emu)
        assert len(first) == USERS * len(APPS)
        seen = await eventually(lambda: a_run_of(db_url, first), 45, "a run of the directory")

        # Between two slots: one user joins, one leaves.
        (joined,) = emu.add_users(1)
        gone = directory_user(3)
        emu.remove_users([gone])
        now = listed_pairs(emu)
        assert {u for _, u in now} == {u for _, u in first} - {gone} | {joined}
        await eventually(lambda: a_run_of(db_url, now, seen), 30, "a run of the new directory")
        assert await daemon.stop() == 0
    async with opened(db_url) as engine, engine.connect() as conn:
        c = audit_target.c
        found = await conn.execute(select(c.app_id, c.user_id, c.enabled))
        stored = {(r.app_id, r.user_id): r.enabled for r in found}
    # The user gone is disabled, never deleted; the one who joined is a target.
    assert stored == {**{p: True for p in now}, **{(a, gone): False for a in APPS}}
    assert "synced targets with Authing: 24 new, 0 disabled" in daemon.log
    assert "synced targets with Authing: 2 new, 2 disabled" in daemon.log
    assert "sync before the run failed" not in daemon.log and "Traceback" not in daemon.log
    assert_every_slot_once(await rows(db_url), step=2.0)


@pytest.mark.parametrize("backend", ["sqlite"])  # a failed sync writes nothing anywhere
async def test_a_sync_that_fails_is_logged_and_the_run_goes_on_with_the_targets_there(
    db_url: str, daemons: Daemons, emulator: Emulator
) -> None:
    async with opened(db_url) as engine, engine.begin() as conn:
        await target_store.save_batch(conn, [("app-001", directory_user(1), True)])
    tail = '\n[discovery]\napps = ["nope-*"]\nsync_before_run = true\n'
    daemon = await daemons.start(db_url, emulator.url, tail=tail)

    async def two_runs() -> bool:
        return len([r for r in await rows(db_url) if r.status == "succeeded"]) >= 2

    await eventually(two_runs, 45, "two succeeded runs")
    assert await daemon.stop() == 0
    assert {(r.total, r.trigger) for r in await rows(db_url) if r.total} == {(1, "schedule")}
    failed = [line for line in daemon.log.splitlines() if "sync before the run failed" in line]
    assert len(failed) >= 2, daemon.log
    assert all(
        line.endswith(
            "sync before the run failed: [discovery] apps 'nope-*': matches no app in "
            "Authing (2 apps: app-001, app-002)"
        )
        for line in failed
    ), failed
    assert "Traceback" not in daemon.log
    assert len(await rows(db_url, audit_target)) == 1


async def seed_targets(url: str, emu: Emulator) -> list[str]:
    """app-001 x every user (the policy expects inactive there), app-002 x ten users (no
    expectation); returns the users the emulator answers active on app-001."""
    users = [directory_user(i) for i in range(1, emu.directory.count + 1)]
    pairs = [("app-001", u) for u in users] + [("app-002", u) for u in users[:10]]
    async with opened(url) as engine, engine.begin() as conn:
        await target_store.save_batch(conn, [(a, u, True) for a, u in pairs])
    violating = [u for u in users if emu.verdict("app-001", u) == "active"]
    assert 5 <= len(violating) < len(users), violating  # the seed gives both kinds
    assert any(emu.verdict("app-002", u) == "active" for u in users[:10])
    return violating


async def violations(url: str) -> list[Any]:
    return await rows(url, audit_violation)


async def test_auto_remediation_kicks_each_violating_user_once_and_the_recheck_resolves(
    db_url: str, daemons: Daemons, emulator: Emulator
) -> None:
    violating = await seed_targets(db_url, emulator)
    tail = POLICY + "\n[remediation]\nauto = true\nmax_users = 50\n"
    daemon = await daemons.start(db_url, emulator.url, listen=True, tail=tail)

    async def all_rechecked() -> list[Any]:
        done = await rows(db_url, remediation)
        return done if len(done) == len(violating) and all(r.rechecked_at for r in done) else []

    kicked = await eventually(all_rechecked, 45, "every violating user kicked and re-checked")
    recheck_runs = {r.recheck_run_id for r in kicked}

    async def a_later_slot_run() -> bool:  # one more run: nothing is kicked a second time
        return any(
            r.status == "succeeded" and r.scheduled_for and r.id > max(recheck_runs)
            for r in await rows(db_url)
        )

    await eventually(a_later_slot_run, 30, "a slot run after the re-check")
    status, text = await daemon.get("/metrics")
    assert status == 200
    assert await daemon.stop() == 0

    assert emulator.stats()["kicks_per_user"] == {u: 1 for u in violating}
    assert all(emulator.verdict("app-001", u) == "inactive" for u in violating)
    assert {(r.app_id, r.state, r.recheck_active) for r in kicked} == {("app-001", "kicked", False)}
    assert sorted(r.user_id for r in kicked) == sorted(violating)
    # Each violation was opened by a slot run and resolved by the re-check, not by the kick.
    found = await violations(db_url)
    assert sorted(v.user_id for v in found) == sorted(violating)
    assert {(v.app_id, v.is_open, v.resolution) for v in found} == {("app-001", None, "recheck")}
    assert {v.resolved_run_id for v in found} <= recheck_runs
    runs = {r.id: r for r in await rows(db_url)}
    assert {runs[i].trigger for i in recheck_runs} == {"remediation"}
    assert metric(text, "audit_job_remediations_total", '{outcome="applied"}') == len(violating)
    assert metric(text, "audit_job_remediations_total", '{outcome="failed"}') == 0
    assert daemon.log.count(STARTS_LOUDLY) == 1  # once at start (each slot says it again)
    assert daemon.log.index(STARTS_LOUDLY) < daemon.log.index("leader now")
    n = len(violating)
    assert f"{n} users kicked, 0 failed, {n} violations resolved by the re-check" in daemon.log
    assert "automatic remediation:" not in daemon.log and "Traceback" not in daemon.log
    assert "sk-demo" not in daemon.log
    assert_every_slot_once(list(runs.values()))


async def test_auto_remediation_above_max_users_kicks_nobody_and_keeps_running(
    db_url: str, daemons: Daemons, emulator: Emulator
) -> None:
    violating = await seed_targets(db_url, emulator)
    limit = len(violating) - 1
    tail = POLICY + f"\n[remediation]\nauto = true\nmax_users = {limit}\n"
    daemon = await daemons.start(db_url, emulator.url, listen=True, tail=tail)
    refusal = (
        f"automatic remediation: kick: the plan has {len(violating)} users, above "
        f"[remediation] max_users = {limit}; nothing kicked (to allow it: "
        f"[remediation] max_users = {len(violating)})"
    )
    await eventually(lambda: _logged(daemon, refusal), 45, "the refusal")

    async def runs_after_the_refusal() -> bool:  # the schedule goes on
        return len([r for r in await rows(db_url) if r.status == "succeeded"]) >= 3

    await eventually(runs_after_the_refusal, 30, "three succeeded runs")
    status, text = await daemon.get("/metrics")
    assert daemon.process.returncode is None
    assert await daemon.stop() == 0

    assert emulator.stats()["kicks_per_user"] == {}
    assert all(emulator.verdict("app-001", u) == "active" for u in violating)
    assert await rows(db_url, remediation) == []
    found = await violations(db_url)
    assert sorted(v.user_id for v in found) == sorted(violating)
    assert {v.is_open for v in found} == {True}
    # One line per refusal, nothing else of it (no traceback), once per slot run at most.
    lines = [line for line in daemon.log.splitlines() if "automatic remediation:" in line]
    assert lines and all(refusal in line for line in lines), lines
    succeeded = [r for r in await rows(db_url) if r.status == "succeeded"]
    assert len(lines) <= len(succeeded)
    assert "Traceback" not in daemon.log
    assert status == 200
    assert metric(text, "audit_job_remediations_total", '{outcome="applied"}') == 0
    assert_every_slot_once(await rows(db_url))


async def _logged(daemon: Any, text: str) -> bool:
    return text in daemon.log
