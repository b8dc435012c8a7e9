"""`audit-job targets discover|sync` and `audit-job kick` as real subprocesses against an
in-process emulator on loopback, on the three backends.

The expected pairs come from the emulator's own directory (status and "ever logged in" are
functions of the seed), so a discovery is compared with the truth pair by pair. Kicks are
counted by the emulator (`kicks_per_user`), which counts a kick only once it was applied.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import cli_env, write_config
from sqlalchemy import func, select

from audit_job.emulator import Emulator
from audit_job.emulator.directory import user_id as directory_user
from audit_job.store import outbox
from audit_job.store import targets as target_store
from audit_job.store.engine import opened
from audit_job.store.tables import (
    audit_event,
    audit_target,
    audit_violation,
    discovery_cursor,
    remediation,
)
from audit_job.store.violations import JudgedAnswer

SEED = 11
APPS = [f"app-{n:03d}" for n in range(1, 6)]


@dataclass
class Done:
    code: int
    out: str
    err: str


async def start(tmp: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "audit_job",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(),
        cwd=tmp,
    )


async def cli(tmp: Path, *args: str, timeout: float = 300) -> Done:
    proc = await start(tmp, *args)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode())


def config(tmp: Path, db_url: str, url: str, **remediation_: Any) -> str:
    sections: dict[str, dict[str, Any]] = {
        "database": {"url": db_url},
        "authing": {
            "host": url,
            "access_key_id": "ak-demo",
            "access_key_secret": "sk-demo",
            "timeout_seconds": 5,
        },
        "audit": {"concurrency": 8, "rate_per_second": 3000, "max_attempts": 8},
    }
    if remediation_:
        sections["remediation"] = remediation_
    return str(write_config(tmp / "audit-job.toml", sections))


async def fetch(url: str, stmt: Any) -> list[Any]:
    async with opened(url) as engine, engine.connect() as conn:
        return list((await conn.execute(stmt)).all())


async def targets(url: str) -> dict[tuple[str, str], bool]:
    rows = await fetch(
        url, select(audit_target.c.app_id, audit_target.c.user_id, audit_target.c.enabled)
    )
    return {(r.app_id, r.user_id): r.enabled for r in rows}


def expected_pairs(emu: Emulator, apps: list[str], status: str) -> set[tuple[str, str]]:
    directory = emu.directory
    chosen = [directory.app(a) for a in apps]
    return {
        (app.app_id, directory_user(index))
        for index in range(1, directory.count + 1)
        if directory.exists(index) and directory.status(index) == status
        for app in chosen
        if app is not None and directory.logged_in(index, app)
    }


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(seed=SEED, users=10_000, apps=APPS, login_share=0.3) as emu:
        yield emu


async def test_discovery_exact_pairs_under_faults_resumes_after_kill_and_sync_twice(
    emulator: Emulator, db_url: str, tmp_path: Path
) -> None:
    cfg = config(tmp_path, db_url, emulator.url)
    emulator.configure(rate=400, burst=40, fault_5xx=0.03, fault_reset=0.02, fault_busy=0.02)
    args = (
        "-c",
        cfg,
        "targets",
        "discover",
        "--apps",
        "app-00*",
        "--status",
        "Activated",
        "--logged-in",
    )

    # Killed once it has committed a few pages, then run again: it resumes from the cursor.
    proc = await start(tmp_path, *args)
    for _ in range(600):
        rows = await fetch(db_url, select(func.max(discovery_cursor.c.page)))
        if rows and rows[0][0] and rows[0][0] >= 5:
            break
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    resumed_at = (await fetch(db_url, select(func.count()).select_from(discovery_cursor)))[0][0]
    assert resumed_at >= 1, "the killed discover committed no cursor"
    done = await cli(tmp_path, *args)
    assert done.code == 0, done.err
    expected = expected_pairs(emulator, APPS, "Activated")
    assert len(expected) > 10_000 * 5 * 0.9 * 0.3 * 0.8
    assert set(await targets(db_url)) == expected
    stats = emulator.stats()
    assert stats["throttled"] > 0 or stats["faults"], "faults and throttling were meant to be on"
    # The resumed discover went on from the killed one's last committed page, not page 1.
    resumed = re.search(r"resuming logged-in:app-001 at page (\d+)", done.err)
    assert resumed is not None and int(resumed.group(1)) >= 5, done.err

    # sync: users and an app gone are disabled (kept), new users added; twice changes nothing.
    emulator.configure(fault_5xx=0.0, fault_reset=0.0, fault_busy=0.0, rate=0)
    gone_user = next(u for a, u in sorted(expected) if a == "app-001")
    emulator.remove_users([gone_user])
    emulator.remove_apps(["app-005"])
    new_users = emulator.add_users(300)
    sync = (
        "-c",
        cfg,
        "targets",
        "sync",
        "--from",
        "authing",
        "--apps",
        "app-00[1-4]",
        "--status",
        "Activated",
        "--logged-in",
    )
    dry = await cli(tmp_path, *sync, "--dry-run")
    assert dry.code == 0, dry.err
    assert set(await targets(db_url)) == expected  # a dry run changes nothing
    first = await cli(tmp_path, *sync)
    assert first.code == 0, first.err
    now = await targets(db_url)
    assert now[("app-001", gone_user)] is False
    assert all(not enabled for (app, _), enabled in now.items() if app == "app-005")
    after = expected_pairs(emulator, APPS[:4], "Activated")
    assert {p for p, enabled in now.items() if enabled} == after
    assert any(u in new_users for _, u in after)
    planned = re.search(r"(\d+) new pairs, (\d+) to disable", dry.out)
    applied = re.search(r"(\d+) new pairs added, (\d+) disabled", first.out)
    assert planned and applied and planned.groups() == applied.groups()
    second = await cli(tmp_path, *sync)
    assert second.code == 0, second.err
    assert "0 new pairs added, 0 disabled" in second.out
    assert await targets(db_url) == now


async def seed_violations(url: str, emu: Emulator, count: int) -> list[tuple[str, str]]:
    """`count` pairs active in the emulator, expected inactive, each with an open violation."""
    pairs: list[tuple[str, str]] = []
    for index in range(1, emu.directory.count + 1):
        user = directory_user(index)
        if emu.verdict("app-001", user) == "active":
            pairs.append(("app-001", user))
        if len(pairs) == count:
            break
    now = datetime.now(UTC)
    async with opened(url) as engine, engine.begin() as conn:
        await target_store.save_batch(conn, [(a, u, True, "inactive") for a, u in pairs])
        await outbox.record_answers(
            conn,
            [JudgedAnswer(a, u, True, now, 1, "inactive", "critical", "target") for a, u in pairs],
        )
    return pairs


async def test_kick_dry_run_then_apply_resolves_through_the_recheck(
    emulator: Emulator, db_url: str, tmp_path: Path
) -> None:
    cfg = config(tmp_path, db_url, emulator.url)
    pairs = await seed_violations(db_url, emulator, 30)
    dry = await cli(tmp_path, "-c", cfg, "kick", "--violations")
    assert dry.code == 0, dry.err
    assert "30 users, 1 apps, 30 kick-users calls" in dry.out
    assert emulator.stats()["kicks_per_user"] == {}
    assert await fetch(db_url, select(remediation.c.id)) == []

    emulator.configure(fault_5xx=0.05, fault_reset=0.03)
    done = await cli(tmp_path, "-c", cfg, "kick", "--violations", "--apply", "--yes")
    assert done.code == 0, done.out + done.err
    assert emulator.stats()["kicks_per_user"] == {u: 1 for _, u in pairs}
    assert all(emulator.verdict(a, u) == "inactive" for a, u in pairs)
    rows = await fetch(db_url, select(remediation))
    assert {(r.state, r.recheck_active) for r in rows} == {("kicked", False)}
    assert all(r.request_id and ":" in r.actor and r.os_user for r in rows)
    violations = await fetch(
        db_url, select(audit_violation.c.is_open, audit_violation.c.resolution)
    )
    assert set(violations) == {(None, "recheck")}
    kinds = await fetch(
        db_url, select(audit_event.c.type, func.count()).group_by(audit_event.c.type)
    )
    counts = dict(kinds)
    assert counts["remediation.applied"] == 30 and counts["violation.resolved"] == 30
    assert "30 users kicked" in done.out and "30 violations resolved" in done.out
    # Kicked violations are not planned again.
    again = await cli(tmp_path, "-c", cfg, "kick", "--violations")
    assert "0 users" in again.out


async def sent_at_least(url: str, proc: asyncio.subprocess.Process, more: int) -> None:
    """Wait until `more` further pairs were sent to kick-users (or the process ended)."""
    calls = select(func.count()).select_from(remediation).where(remediation.c.sent_at.is_not(None))
    target = (await fetch(url, calls))[0][0] + more
    deadline = asyncio.get_running_loop().time() + 90
    while proc.returncode is None and (await fetch(url, calls))[0][0] < target:
        assert asyncio.get_running_loop().time() < deadline, "no kick-users call in 90 s"
        await asyncio.sleep(0.05)


async def test_kill_during_apply_then_resume_kicks_each_user_once(
    emulator: Emulator, db_url: str, tmp_path: Path
) -> None:
    cfg = config(tmp_path, db_url, emulator.url)
    pairs = await seed_violations(db_url, emulator, 40)
    emulator.configure(delay_ms=40, jitter_ms=40)
    rng = random.Random(SEED)
    for attempt in range(5):
        proc = await start(
            tmp_path, "-c", cfg, "kick", "--violations", "--apply", "--yes", "--max-users", "100"
        )
        # Killed after a random number of further kick-users calls (not after a random
        # time: on a busy host the process may not have planned anything in seconds).
        await sent_at_least(db_url, proc, rng.randint(1, 12))
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
        resumed = await cli(tmp_path, "-c", cfg, "kick", "--resume")
        assert resumed.code == 0, f"attempt {attempt}: {resumed.out}{resumed.err}"
        kicks = emulator.stats()["kicks_per_user"]
        assert max(kicks.values(), default=1) == 1, kicks
    kicks = emulator.stats()["kicks_per_user"]
    assert kicks == {u: 1 for _, u in pairs}
    states = await fetch(db_url, select(remediation.c.state, remediation.c.recheck_active))
    assert set(states) == {("kicked", False)}
    assert len(states) == len(pairs)


async def test_bad_input_one_line_and_nothing_kicked(
    emulator: Emulator, db_url: str, tmp_path: Path
) -> None:
    cfg = config(tmp_path, db_url, emulator.url)
    cases = [
        (("targets", "discover", "--apps", "nope-*"), 2, "--apps 'nope-*': matches no app"),
        (
            ("targets", "discover", "--apps", "app-*", "--status", "Active"),
            2,
            "--status: must be one of",
        ),
        (("kick", "--apply", "--yes"), 2, "kick: nothing chosen"),
        (("targets", "sync", "--from", "ldap"), 2, "--from: only 'authing'"),
    ]
    for args, code, words in cases:
        done = await cli(tmp_path, "-c", cfg, *args)
        assert (done.code, done.err.strip().splitlines()[-1:]) == (code, [done.err.strip()]), done
        assert words in done.err and "Traceback" not in done.err
    await seed_violations(db_url, emulator, 51)
    refused = await cli(tmp_path, "-c", cfg, "kick", "--violations", "--apply", "--yes")
    assert refused.code == 2
    assert "the plan has 51 users, above [remediation] max_users = 50" in refused.err
    assert emulator.stats()["kicks_per_user"] == {}
    assert await fetch(db_url, select(remediation.c.id)) == []
    empty = await cli(
        tmp_path,
        "-c",
        cfg,
        "kick",
        "--app",
        "app-002",
        "--user",
        "u",
        "--run",
        "9",
        "--status",
        "active",
        "--apply",
        "--yes",
    )
    assert empty.code == 2 and "no such run" in empty.err
