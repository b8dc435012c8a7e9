"""`audit-job demo`: the whole job on a fresh machine, with nothing configured.

Starts the emulator in-process on a loopback port (with a few faults switched on), seeds
sample pairs into an embedded SQLite file, runs an audit and returns the run's report.
Running it again adds a run to the same file; a few sessions change between runs (the
emulator's truth moves), so `audit-job changes` has something to show. A few pairs that
have a session are expected `inactive`, so the report shows violations, and the event
feed goes to a JSON lines file next to the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import func, select

from audit_job.commands import report as report_service
from audit_job.commands import run as run_service
from audit_job.config import (
    AuditSettings,
    AuthingSettings,
    DatabaseSettings,
    JsonlSinkSettings,
    LoadedConfig,
    Settings,
)
from audit_job.emulator import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    Emulator,
    EmulatorOptions,
    hashed_active,
)
from audit_job.models import Expect, RunTrigger
from audit_job.store import migrate
from audit_job.store import targets as target_store
from audit_job.store.engine import opened
from audit_job.store.tables import audit_run

DEMO_APPS = ("console", "crm", "helpdesk", "wiki", "billing", "mail")
DEMO_SEED = 7
ACTIVE_SHARE = 0.4
FLIP_SHARE = 0.04  # sessions that appear or disappear between two demo runs
EXPECTED_INACTIVE = 4  # pairs with a session that the demo says must have none


@dataclass
class DemoResult:
    database: str
    summary: run_service.RunSummary
    report: report_service.Report
    events_file: str


def events_file(database: Path) -> Path:
    """Where the demo's event feed goes: next to its database (demo.events.jsonl)."""
    return database.with_name(database.stem + ".events.jsonl")


def demo_pairs(count: int) -> list[tuple[str, str]]:
    """Sample targets: mostly real users, ~2% unknown users, a handful in a retired app."""
    pairs = []
    for n in range(count):
        app = DEMO_APPS[n % len(DEMO_APPS)]
        user = f"missing-user-{n:05d}" if n % 50 == 49 else f"user-{n:05d}@example.com"
        pairs.append((app, user))
    pairs += [("missing-app-legacy", f"user-{n:05d}@example.com") for n in range(5)]
    return pairs


def _flipped(run_number: int, app_id: str, user_id: str) -> bool:
    digest = hashlib.blake2b(f"{run_number}\t{app_id}\t{user_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") < FLIP_SHARE * 2**64


def expected_inactive(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A few pairs that have a session (and keep it: they never flip), one per app: the
    demo expects them `inactive`, so its runs find them in violation."""
    chosen: dict[str, tuple[str, str]] = {}
    for app, user in pairs:
        if app in chosen or app.startswith("missing-") or user.startswith("missing-"):
            continue
        if hashed_active(app, user, DEMO_SEED, ACTIVE_SHARE):
            chosen[app] = (app, user)
        if len(chosen) == EXPECTED_INACTIVE:
            break
    return list(chosen.values())


def _write_truth(path: Path, pairs: list[tuple[str, str]], run_number: int) -> None:
    """Override the emulator's hashed truth for the pairs that flip in this demo run."""
    lines = ["app_id,user_id,active"]
    steady = set(expected_inactive(pairs))
    real = [
        (a, u)
        for a, u in pairs
        if not a.startswith("missing-") and not u.startswith("missing-") and (a, u) not in steady
    ]
    for app, user in real:
        if run_number and _flipped(run_number, app, user):
            active = not hashed_active(app, user, DEMO_SEED, ACTIVE_SHARE)
            lines.append(f"{app},{user},{'true' if active else 'false'}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


async def run_demo(
    database: Path,
    pair_count: int,
    stop: asyncio.Event,
    *,
    on_start: Callable[[run_service.RunHandle], None] | None = None,
) -> DemoResult:
    url = f"sqlite+aiosqlite:///{database}"
    pairs = demo_pairs(pair_count)
    async with opened(url) as engine:
        await migrate.upgrade(engine)
        async with engine.begin() as conn:
            for start in range(0, len(pairs), 2000):
                rows = [(a, u, None) for a, u in pairs[start : start + 2000]]
                await target_store.save_batch(conn, rows)
            runs_so_far = (
                await conn.execute(select(func.count()).select_from(audit_run))
            ).scalar_one()
            for app, user in expected_inactive(pairs):
                await target_store.set_expect(conn, app, user, Expect.INACTIVE.value)
    events = events_file(database)
    with tempfile.TemporaryDirectory(prefix="audit-job-demo-") as tmp:
        truth = Path(tmp) / "truth.csv"
        _write_truth(truth, pairs, int(runs_so_far))
        options = EmulatorOptions(
            seed=DEMO_SEED,
            active_share=ACTIVE_SHARE,
            truth_file=str(truth),
            fault_5xx=0.02,
            fault_html_502=0.01,
            fault_reset=0.01,
            fault_bad_json=0.01,
            fault_busy=0.01,
            delay_ms=5,
            jitter_ms=20,
        )
        async with Emulator(options) as emulator:
            settings = Settings(
                database=DatabaseSettings(url=url),
                authing=AuthingSettings(
                    host=emulator.url,
                    access_key_id=DEFAULT_ACCESS_KEY_ID,
                    access_key_secret=SecretStr(DEFAULT_ACCESS_KEY_SECRET),
                    timeout_seconds=5,
                ),
                # The faults above hit ~6 % of attempts: with 5 attempts a run of 3,000 pairs
                # lost a pair to five faults in a row about once in 400 runs (seen in CI);
                # with 10, once in ~10^8, so the faults cost retries and never an answer.
                audit=AuditSettings(rate_per_second=2000, max_attempts=10),
                sink=[JsonlSinkSettings(name="demo-file", type="jsonl", path=str(events))],
            )
            loaded = LoadedConfig(settings, "demo (built-in)", [])
            request = run_service.RunRequest(trigger=RunTrigger.DEMO)
            summary = await run_service.execute(loaded, request, stop, on_start=on_start)
    async with opened(url) as engine, engine.connect() as conn:
        report = await report_service.report_of(conn, summary.run_id)
    return DemoResult(str(database), summary, report, str(events))
