"""`audit-job demo` as a real subprocess in a fresh directory: it finishes, prints the
per-app table, writes demo.db whose answers are the emulator's truth, and a second demo
adds a second run in which a few sessions flipped. The pairs it expects inactive are in
violation, and its events are in the JSON lines file it names, each once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli
from sqlalchemy import select

from audit_job.commands.demo import (
    ACTIVE_SHARE,
    DEMO_APPS,
    DEMO_SEED,
    EXPECTED_INACTIVE,
    _flipped,
    demo_pairs,
    expected_inactive,
)
from audit_job.emulator import hashed_active
from audit_job.store.engine import opened
from audit_job.store.tables import (
    audit_event,
    audit_run,
    audit_violation,
    session_check,
    session_state,
)


def read(database: Path, table: Any) -> list[Any]:
    async def go() -> list[Any]:
        async with opened(f"sqlite+aiosqlite:///{database}") as engine, engine.connect() as conn:
            return list((await conn.execute(select(table))).all())

    return asyncio.run(go())


def expected_active(run_number: int, app_id: str, user_id: str) -> bool | None:
    """What the demo's emulator answers in its n-th run (0-based)."""
    if app_id.startswith("missing-") or user_id.startswith("missing-"):
        return None
    active = hashed_active(app_id, user_id, DEMO_SEED, ACTIVE_SHARE)
    if (app_id, user_id) in set(expected_inactive(demo_pairs(3000))):
        return active  # the pairs in violation keep their session
    return not active if run_number and _flipped(run_number, app_id, user_id) else active


@pytest.mark.timeout(150)  # two demos of 3,005 pairs on a loaded machine
def test_demo_in_a_fresh_directory_runs_reports_and_runs_again(tmp_path: Path) -> None:
    first = run_cli("demo", "--no-progress", cwd=tmp_path, timeout=80)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    database = tmp_path / "demo.db"
    assert database.is_file() and (tmp_path / "demo.toml").is_file()
    assert "run 1: per app" in first.stdout
    for app in (*DEMO_APPS, "missing-app-legacy"):
        assert app in first.stdout
    assert "Next, try:" in first.stdout

    pairs = set(demo_pairs(3000))
    not_found = {p for p in pairs if expected_active(0, *p) is None}
    (run,) = read(database, audit_run)
    assert (run.trigger, run.status, run.total) == ("demo", "completed_with_errors", len(pairs))
    checks = read(database, session_check)
    assert {(c.app_id, c.user_id) for c in checks} == pairs
    for check in checks:
        expected = expected_active(0, check.app_id, check.user_id)
        if expected is None:
            assert check.status == "error" and check.status_code in (404, 499), check
        else:
            assert check.active is expected, check
    assert run.failed == len(not_found)  # the faults cost retries, never an answer
    assert run.retries > 0

    second = run_cli("demo", "--no-progress", cwd=tmp_path, timeout=80)
    assert second.returncode == 0, second.stderr
    assert "run 2 vs run 1: per app" in second.stdout
    runs = sorted(read(database, audit_run), key=lambda r: r.id)
    assert [(r.id, r.status) for r in runs] == [
        (1, "completed_with_errors"),
        (2, "completed_with_errors"),
    ]
    flipped = {p for p in pairs - not_found if expected_active(1, *p) != expected_active(0, *p)}
    assert flipped
    states = {(s.app_id, s.user_id): s for s in read(database, session_state)}
    assert set(states) == pairs - not_found
    for pair, state in states.items():
        assert state.run_id == 2 and state.active is expected_active(1, *pair)
        assert (state.changed_at == state.checked_at) is (pair in flipped), pair

    # violations: the pairs expected inactive, opened by the first run, still open
    steady = set(expected_inactive(demo_pairs(3000)))
    assert len(steady) == EXPECTED_INACTIVE and all(expected_active(1, *p) for p in steady)
    violations = read(database, audit_violation)
    assert {(v.app_id, v.user_id, v.opened_run_id, v.resolved_run_id) for v in violations} == {
        (*p, 1, None) for p in steady
    }
    assert f"violations: {EXPECTED_INACTIVE} opened, 0 resolved by this run" in first.stdout
    assert f"violations open after run 2 ({EXPECTED_INACTIVE})" in second.stdout
    for _app, user in steady:
        assert user in second.stdout
    # the events: in the file the demo names, each once, as in the feed
    events_file = tmp_path / "demo.events.jsonl"
    assert f"events written to {events_file}" in second.stdout
    lines = [json.loads(line) for line in events_file.read_text().splitlines()]
    feed = read(database, audit_event)
    assert [e["id"] for e in lines] == sorted(e.id for e in feed)
    kinds = {e["type"] for e in lines}
    assert {"violation.opened", "run.finished", "session.activated"} <= kinds
