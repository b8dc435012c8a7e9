"""The event feed across a SIGKILL: `audit-job run` as a real subprocess is killed mid-run,
`audit-job run --resume` finishes it, and the feed holds each event the tables imply
exactly once (flips against the previous run, violations of pairs' own expectations and of
a [[policy]], the run's end); and `audit-job prune` removes delivered events."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from feedcheck import as_implied, feed, implied_events
from helpers import run_cli
from sqlalchemy import insert, update
from test_run_cli import (
    Cli,
    cli,
    config,
    final_count,
    run_rows,
    sample_pairs,
    seed_targets,
    until,
)

from audit_job.emulator import Emulator, EmulatorOptions, truth
from audit_job.store import sinks as sink_store
from audit_job.store import targets as target_store
from audit_job.store.engine import opened
from audit_job.store.tables import audit_event, audit_sink

SEED = 5
__all__ = ["cli"]  # the fixture, from test_run_cli

POLICY = """
[[policy]]
name = "leavers"
apps = ["app-y"]
users = "user-00[0-4]*"
expect = "inactive"
severity = "critical"
"""


@pytest.mark.timeout(120)
async def test_sigkill_then_resume_emits_each_event_exactly_once(
    db_url: str, tmp_path: Path, cli: Cli
) -> None:
    pairs = sample_pairs(300)
    await seed_targets(db_url, pairs)
    async with opened(db_url) as engine, engine.begin() as conn:
        for n in range(0, 60, 2):  # app-x's even users up to 58 are expected logged out
            await target_store.set_expect(conn, "app-x", f"user-{n:04d}", "inactive")
    async with Emulator(EmulatorOptions(seed=SEED)) as emu:
        cfg = config(tmp_path / "audit-job.toml", db_url, emu.url)
        with open(cfg, "a", encoding="utf-8") as file:
            file.write(POLICY)
        first = await cli.run("--config", cfg, "run", "--no-progress", "--json")
        assert first.process.returncode == 0, first.stderr
        first_id = first.summary()["run_id"]

        # Every third pair flips; the second run is slowed down and killed mid-way.
        flipped = pairs[::3]
        truth_file = tmp_path / "truth.csv"
        truth_file.write_text(
            "".join(f"{a},{u},{str(not truth(a, u, SEED)).lower()}\n" for a, u in flipped),
            encoding="utf-8",
        )
        emu.configure(truth_file=str(truth_file), delay_ms=50)
        proc = await cli.start("--config", cfg, "run", "--no-progress", "--json")
        run_id = 0

        async def answered() -> bool:
            nonlocal run_id
            assert proc.process.returncode is None, proc.stderr
            run_id = max(r.id for r in await run_rows(db_url))
            return run_id > first_id and await final_count(db_url, run_id) >= 40

        await until(answered, what="40 answers of the second run")
        proc.process.kill()
        assert await proc.wait() == -signal.SIGKILL
        before_resume = [e for e in await feed(db_url) if e.run_id == run_id]
        assert before_resume, "the killed run committed no event: the kill came too early"
        assert not [e for e in before_resume if e.type.startswith("run.")]
        await asyncio.sleep(0.2)
        emu.configure(delay_ms=0)
        resumed = await cli.run("--config", cfg, "run", "--resume", str(run_id), "--json")
        assert resumed.process.returncode == 0, resumed.stderr
    assert resumed.summary()["status"] == "succeeded"

    got = await feed(db_url)
    assert len({e.id for e in got}) == len(got)
    assert sorted(map(as_implied, got), key=repr) == await implied_events(
        db_url, [first_id, run_id]
    )
    # Events committed before the kill are still there, as they were.
    assert [e for e in got if e.id <= before_resume[-1].id and e.run_id == run_id] == before_resume
    kinds = [e.type for e in got if e.run_id == run_id]
    assert kinds.count("run.finished") == 1
    assert {"session.activated", "session.deactivated", "violation.resolved"} <= set(kinds)
    assert "violation.opened" in [e.type for e in got if e.run_id == first_id]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_prune_removes_delivered_events_older_than_the_retention(
    db_url: str, tmp_path: Path
) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    async with opened(db_url) as engine, engine.begin() as conn:
        await conn.execute(
            insert(audit_event),
            [{"type": "slot.missed", "created_at": old, "payload": "{}"} for _ in range(6)],
        )
        await sink_store.ensure(conn, ["archive"])
        await conn.execute(
            update(audit_sink).where(audit_sink.c.name == "archive").values(last_event_id=4)
        )
    cfg = tmp_path / "audit-job.toml"
    cfg.write_text(
        f'[database]\nurl = "{db_url}"\n\n[events]\nkeep_days = 30\n\n'
        f'[[sink]]\nname = "archive"\ntype = "jsonl"\npath = "{tmp_path / "events.jsonl"}"\n',
        encoding="utf-8",
    )
    cfg.chmod(0o600)
    done = run_cli("--config", str(cfg), "prune", "--keep-days", "0")
    assert done.returncode == 0, done.stderr
    assert "deleted 4 delivered events created before" in done.stdout
    # ids 5 and 6 are not delivered to the sink yet: they stay
    assert [e.id for e in await feed(db_url)] == [5, 6]
