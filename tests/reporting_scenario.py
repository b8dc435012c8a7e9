"""A small audit history made by real runs against the emulator, for the reporting tests.

Run 1 and run 2 audit the same targets except: two pairs leave the targets before run 2
(gone_from_targets), one joins (newly_seen), and the truth file flips a known set of
pairs between the runs. A skipped schedule slot sits between them, as the daemon writes.
Every expectation in the tests comes from SELECTs on these rows, plus the truth file.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import delete, insert, select

from audit_job.commands import run as run_service
from audit_job.config import (
    AuditSettings,
    AuthingSettings,
    DatabaseSettings,
    LoadedConfig,
    Settings,
)
from audit_job.emulator import Emulator, EmulatorOptions
from audit_job.store import targets as target_store
from audit_job.store.engine import opened
from audit_job.store.tables import audit_run, audit_target, session_check

APPS = ("app-a", "app-b", "app-c")
Pair = tuple[str, str]


@dataclass
class Scenario:
    url: str
    run_ids: list[int]
    skipped_run_id: int
    flipped: set[Pair]
    gone: set[Pair]
    added: Pair
    errors: set[Pair] = field(default_factory=set)


def scenario_pairs(count: int = 36) -> list[Pair]:
    pairs = []
    for n in range(count):
        user = f"missing-{n:03d}" if n % 12 == 11 else f"user-{n:03d}"
        pairs.append((APPS[n % 3], user))
    return pairs


def _truth(path: Path, pairs: list[Pair], flipped: set[Pair]) -> None:
    lines = ["app_id,user_id,active"]
    for number, (app, user) in enumerate(pairs):
        if user.startswith("missing-"):
            continue  # left to the emulator: user not found, an error row
        active = number % 2 == 0
        if (app, user) in flipped:
            active = not active
        lines.append(f"{app},{user},{'true' if active else 'false'}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


async def build_scenario(
    url: str, tmp_path: Path, expect_inactive: tuple[Pair, ...] = ()
) -> Scenario:
    """Two runs (and a skipped slot between them); `expect_inactive` pairs are expected
    inactive from the start (active ones open violations)."""
    pairs = scenario_pairs()
    real = [p for p in pairs if not p[1].startswith("missing-")]
    flipped = set(real[0:30:4])
    gone = {real[1], real[2]}
    added = ("app-a", "user-new")
    truth_1, truth_2 = tmp_path / "truth1.csv", tmp_path / "truth2.csv"
    _truth(truth_1, [*pairs, added], set())
    _truth(truth_2, [*pairs, added], flipped)
    async with opened(url) as engine, engine.begin() as conn:
        await target_store.save_batch(conn, [(a, u, None) for a, u in pairs])
        for app, user in expect_inactive:
            await target_store.set_expect(conn, app, user, "inactive")
    run_ids = []
    async with Emulator(EmulatorOptions(truth_file=str(truth_1))) as emulator:
        settings = Settings(
            database=DatabaseSettings(url=url),
            authing=AuthingSettings(
                host=emulator.url,
                access_key_id="ak-demo",
                access_key_secret=SecretStr("sk-demo"),
                timeout_seconds=5,
            ),
            audit=AuditSettings(concurrency=8, rate_per_second=5000, max_attempts=3),
        )
        loaded = LoadedConfig(settings, "test", [])
        request = run_service.RunRequest()
        run_ids.append((await run_service.execute(loaded, request, asyncio.Event())).run_id)
        async with opened(url) as engine, engine.begin() as conn:
            slot = datetime(2026, 1, 1, 9, tzinfo=UTC)
            result = await conn.execute(
                insert(audit_run).values(
                    trigger="schedule",
                    status="skipped_overlap",
                    started_at=slot,
                    finished_at=slot,
                    scheduled_for=slot,
                    total=0,
                    active=0,
                    inactive=0,
                    failed=0,
                    retries=0,
                    throttled=0,
                    message="a run was still going",
                )
            )
            skipped = int(result.inserted_primary_key[0])
            for app, user in gone:
                await conn.execute(
                    delete(audit_target).where(
                        audit_target.c.app_id == app, audit_target.c.user_id == user
                    )
                )
            await target_store.save_batch(conn, [(*added, None)])
        emulator.configure(truth_file=str(truth_2))
        run_ids.append((await run_service.execute(loaded, request, asyncio.Event())).run_id)
    errors = {p for p in pairs if p[1].startswith("missing-")}
    return Scenario(url, run_ids, skipped, flipped, gone, added, errors)


async def checks_by_pair(url: str, run_id: int) -> dict[tuple[str, str], dict[str, object]]:
    async with opened(url) as engine, engine.connect() as conn:
        rows = await conn.execute(select(session_check).where(session_check.c.run_id == run_id))
        return {(r.app_id, r.user_id): dict(r._mapping) for r in rows}


def expected_changes(
    before: dict[tuple[str, str], dict[str, object]],
    after: dict[tuple[str, str], dict[str, object]],
    targets: set[tuple[str, str]],
) -> dict[tuple[str, str], str]:
    """The change rules, written out over two runs' rows in Python."""
    found = {}
    for pair, now in after.items():
        old = before.get(pair)
        if old is None:
            found[pair] = "newly_seen"
        elif None not in (old["active"], now["active"]) and old["active"] != now["active"]:
            found[pair] = "inactive->active" if now["active"] else "active->inactive"
    for pair in before.keys() - after.keys():
        if pair not in targets:
            found[pair] = "gone_from_targets"
    return found
