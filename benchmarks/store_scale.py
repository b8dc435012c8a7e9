"""The store at scale: reports, prune and a new run's writes over 50 runs of 1,000,000 pairs.

    .venv/bin/python benchmarks/store_scale.py [--scale 1.0] [--runs 50]
                                               [--backend postgresql,mariadb]
                                               [--mariadb-scale 0.1] [--keep]
                                               [--no-unpartitioned]

For each layout it builds a database by SQL (no API, no Python rows): `--runs` finished
runs of `1,000,000 x --scale` pairs (20 apps, 2 % errors, a third active, 0.1 % of the
answers flipping from one run to the next), the targets and the latest state. Then it
times, as a user runs them (`audit-job` subprocesses, start-up included): `runs`, `report`,
`changes` of the latest run, `history APP USER`, `results --status error --format csv`
piped to `wc -l`, and the same reports in process (no interpreter start-up); then a new
run's snapshot (as `audit-job run` takes it) and its writes (the store's write path, batches
of 500, a fifth of the pairs) beside the same on a database holding only the targets, and
(partitioned layout) on one holding a single earlier run, in alternating chunks; then
`prune` of the oldest 10 runs; and the database's size on disk.

Layouts: PostgreSQL partitioned by run with per-run summary rows (what the tool makes),
PostgreSQL unpartitioned without summary rows (schema 0009's layout, reports counting
checks), and MariaDB (one plain table, summary rows) at `--mariadb-scale`. Scratch
databases are created and dropped (`--keep` leaves them). Targets (50 x 1M on PostgreSQL):
report, runs, changes, history < 1 s; prune of 10 runs < 5 s; writes within 10 % of empty.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import case, insert, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit_job.commands import report as report_service  # noqa: E402
from audit_job.commands.run.snapshot import take_snapshot  # noqa: E402
from audit_job.config import DatabaseSettings, Settings  # noqa: E402
from audit_job.models import CheckResult, CheckStatus  # noqa: E402
from audit_job.store import bulk, migrate, partitions, results, run_changes, summary  # noqa: E402
from audit_job.store import runs as run_store  # noqa: E402
from audit_job.store.engine import create_engine  # noqa: E402
from audit_job.store.tables import audit_run  # noqa: E402

CLI = str(Path(sys.executable).parent / "audit-job")
PG_ADMIN = os.environ.get("AUDIT_JOB_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
MY_ADMIN = f"mysql://{os.environ.get('AUDIT_JOB_BENCH_MARIADB', 'root@127.0.0.1:3306')}/test"
APPS = 20
WRITE_BATCH = 500
# Alternating chunks of 2.5 % of the pairs each, a fifth of them written in all: with 4
# chunks the ratio moved between 0.85x and 1.02x from one invocation to the next.
WRITE_ROUNDS = 8
PRUNED = 10
BASE = datetime(2026, 11, 1, tzinfo=UTC)

# Rows by SQL: pair g is app g % 20, user g / 20. Run r flips the pairs with (g + r) % 1000 = 0.
PG_SERIES = "generate_series(0, {n} - 1) AS s(g)"
MY_SERIES = "(SELECT seq AS g FROM seq_0_to_{last}) AS s"
ACTIVE = "((g % 3 = 0) <> ((g + {run}) % 1000 = 0))"
APP = {"pg": "'app-' || lpad((g % 20)::text, 2, '0')", "my": "CONCAT('app-', LPAD(g % 20, 2, '0'))"}
USER = {
    "pg": "'user-' || lpad((g / 20)::text, 7, '0') || '@example.com'",
    "my": "CONCAT('user-', LPAD(g DIV 20, 7, '0'), '@example.com')",
}
CHECKS = """
INSERT INTO session_check (run_id, app_id, user_id, status, active, checked_at, attempts,
                           http_status, status_code, api_code, message, request_id, latency_ms)
SELECT {run}, {app}, {user},
       CASE WHEN g % 50 = 7 THEN 'error' WHEN {active} THEN 'active' ELSE 'inactive' END,
       CASE WHEN g % 50 = 7 THEN NULL ELSE {active} END,
       {at}, 1, 200, CASE WHEN g % 50 = 7 THEN 404 ELSE 200 END,
       CASE WHEN g % 50 = 7 THEN 2004 ELSE 200 END,
       CASE WHEN g % 50 = 7 THEN 'user not found' END, {request_id}, 5 + g % 40
FROM {series}
"""
AT = {
    "pg": "timestamptz '{day}' + g * interval '97 microseconds'",
    "my": "TIMESTAMPADD(MICROSECOND, g * 97, '{day}')",
}
REQUEST_ID = {"pg": "substr(md5(g::text), 1, 12)", "my": "LEFT(MD5(g), 12)"}
TARGETS = (
    "INSERT INTO audit_target (app_id, user_id, enabled, created_at, expect) "
    "SELECT {app}, {user}, TRUE, '{day}', 'any' FROM {series}"
)
STATE = (
    "INSERT INTO session_state (app_id, user_id, active, checked_at, changed_at, run_id) "
    "SELECT {app}, {user}, {active}, '{day}', '{day}', {run} FROM {series}"
)
# Schema 0009's session_check on PostgreSQL: one table, primary key (id).
PG_PLAIN = [
    "DROP TABLE session_check",
    """CREATE TABLE session_check (
        id BIGSERIAL, run_id INTEGER NOT NULL, app_id VARCHAR(255) NOT NULL,
        user_id VARCHAR(255) NOT NULL, status VARCHAR(16) NOT NULL, active BOOLEAN,
        checked_at TIMESTAMPTZ, attempts INTEGER NOT NULL, http_status INTEGER,
        status_code INTEGER, api_code BIGINT, message VARCHAR(512), request_id VARCHAR(128),
        latency_ms INTEGER, claimed_by VARCHAR(64), expect VARCHAR(16),
        CONSTRAINT ck_session_check_status
            CHECK (status IN ('pending', 'active', 'inactive', 'error')))""",
]
PG_PLAIN_KEYS = [
    "ALTER TABLE session_check ADD CONSTRAINT pk_session_check PRIMARY KEY (id)",
    "ALTER TABLE session_check ADD CONSTRAINT fk_session_check_run_id_audit_run "
    "FOREIGN KEY (run_id) REFERENCES audit_run (id) ON DELETE CASCADE",
    "ALTER TABLE session_check ADD CONSTRAINT uq_session_check_app_id_user_id_run_id "
    "UNIQUE (app_id, user_id, run_id)",
    "CREATE INDEX ix_session_check_run_id_status_id ON session_check (run_id, status, id)",
]


@dataclass
class Layout:
    label: str
    kind: str  # pg | my
    partitioned: bool
    summaries: bool
    url: str = ""
    admin: str = ""
    name: str = ""
    figures: dict[str, float] = field(default_factory=dict)


def _day(run: int) -> str:
    return (BASE + timedelta(hours=run)).strftime("%Y-%m-%d %H:%M:%S")


def _series(kind: str, n: int) -> str:
    return PG_SERIES.format(n=n) if kind == "pg" else MY_SERIES.format(last=n - 1)


def _sql(template: str, kind: str, n: int, run: int = 0, **extra: str) -> str:
    values = {
        "app": APP[kind],
        "user": USER[kind],
        "series": _series(kind, n),
        "active": ACTIVE.format(run=run),
        "run": str(run),
        "n": str(n),
        "day": _day(run),
        "request_id": REQUEST_ID[kind],
        **extra,
    }
    values["at"] = AT[kind].format(day=values["day"])
    return template.format(**values)


async def _admin(layout: Layout, statement: str) -> None:
    engine = create_engine(layout.admin)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def create_database(layout: Layout) -> None:
    layout.name = f"audit_scale_{uuid.uuid4().hex[:8]}"
    if layout.kind == "pg":
        layout.admin = PG_ADMIN.replace("postgresql://", "postgresql+asyncpg://")
        layout.url = layout.admin.rsplit("/", 1)[0] + f"/{layout.name}"
    else:
        layout.admin = MY_ADMIN.replace("mysql://", "mysql+asyncmy://")
        layout.url = layout.admin.rsplit("/", 1)[0] + f"/{layout.name}"
    await _admin(layout, f"CREATE DATABASE {layout.name}")
    engine = create_engine(layout.url)
    try:
        await migrate.upgrade(engine)
        if layout.kind == "pg" and not layout.partitioned:
            async with engine.begin() as conn:
                for statement in PG_PLAIN:
                    await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def drop_database(layout: Layout) -> None:
    if layout.name:
        force = " WITH (FORCE)" if layout.kind == "pg" else ""
        await _admin(layout, f"DROP DATABASE IF EXISTS {layout.name}{force}")
        layout.name = ""


async def _load_run(conn: AsyncConnection, layout: Layout, run: int, pairs: int) -> None:
    """One run's checks. A build shortcut on PostgreSQL, where the keys are built in bulk
    after the rows are in (several times faster than row by row): partitioned, the run's
    table is filled, then attached (which builds its indexes); unpartitioned, the keys are
    made once after every run is in (PG_PLAIN_KEYS)."""
    if not layout.partitioned:
        await conn.execute(text(_sql(CHECKS, layout.kind, pairs, run)))
        return
    name = partitions.partition_name(run)
    await conn.execute(
        text(f"CREATE TABLE {name} (LIKE session_check INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    )
    await conn.execute(text(_sql(CHECKS.replace("session_check", name, 1), "pg", pairs, run)))
    await conn.execute(
        text(
            f"ALTER TABLE session_check ATTACH PARTITION {name} "
            f"FOR VALUES FROM ({run}) TO ({run + 1})"
        )
    )


async def build(layout: Layout, runs: int, pairs: int) -> float:
    """The history by SQL; returns the seconds it took."""
    started = time.monotonic()
    engine = create_engine(layout.url)
    kind = layout.kind
    try:
        async with engine.begin() as conn:
            await conn.execute(text(_sql(TARGETS, kind, pairs)))
            await conn.execute(text(_sql(STATE, kind, pairs, runs)))
        for run in range(1, runs + 1):
            async with engine.begin() as conn:
                if kind == "pg":  # a build shortcut: no commit flush, no per-row FK trigger
                    await conn.execute(text("SET LOCAL synchronous_commit = off"))
                    await conn.execute(text("SET LOCAL session_replication_role = replica"))
                day = BASE + timedelta(hours=run)
                await conn.execute(
                    insert(audit_run).values(
                        id=run,
                        trigger="schedule",
                        status="succeeded",
                        started_at=day,
                        finished_at=day,
                        heartbeat_at=day,
                        total=pairs,
                        active=0,
                        inactive=0,
                        failed=0,
                        retries=0,
                        throttled=0,
                    )
                )
                await _load_run(conn, layout, run, pairs)
                if layout.summaries:  # what the tool writes when a run ends
                    await summary.write_summary(conn, run)
                    if run == runs:  # the changes timed are the latest run's
                        await run_changes.record_changes(conn, run)
            print(f"    {layout.label}: run {run}/{runs} built", flush=True)
        if kind == "pg" and not layout.partitioned:
            async with engine.begin() as conn:
                for statement in PG_PLAIN_KEYS:
                    await conn.execute(text(statement))
        if kind == "pg" and runs:  # the ids were given: the sequence carries on after them
            async with engine.begin() as conn:
                await conn.execute(text(f"SELECT setval('audit_run_id_seq', {runs})"))
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(
                text("VACUUM ANALYZE" if kind == "pg" else "ANALYZE TABLE session_check")
            )
            if kind == "pg":
                await conn.execute(text("CHECKPOINT"))
    finally:
        await engine.dispose()
    return time.monotonic() - started


def cli(layout: Layout, *args: str, pipe_wc: bool = False) -> tuple[float, str]:
    """Seconds of one `audit-job` command as a user runs it, and its last output line."""
    env = {**os.environ, "AUDIT_JOB_DATABASE_URL": layout.url, "NO_COLOR": "1"}
    command = [CLI, *args]
    started = time.monotonic()
    if pipe_wc:
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE)
        out = subprocess.run(["wc", "-l"], stdin=first.stdout, capture_output=True, text=True)
        first.wait()
        code, output = first.returncode, out.stdout
    else:
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        code, output = done.returncode, done.stdout + done.stderr
    seconds = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"audit-job {' '.join(args)} failed ({code}): {output[-500:]}")
    lines = output.strip().splitlines()
    return seconds, lines[-1] if lines else ""


def time_reports(layout: Layout, runs: int) -> None:
    user = "user-0000000@example.com"
    steps = {
        "runs": ("runs",),
        "report": ("report",),
        "changes": ("changes", "--format", "csv"),
        "history": ("history", "app-00", user),
    }
    for name, args in steps.items():
        best = min(cli(layout, *args)[0] for _ in range(3))  # warm: the second and third
        layout.figures[name] = best
    seconds, count = cli(layout, "results", "--status", "error", "--format", "csv", pipe_wc=True)
    layout.figures["results_error_csv"] = seconds
    layout.figures["results_error_rows"] = float(count.strip() or 0) - 1  # minus the header


async def new_run(url: str) -> tuple[int, float]:
    """A new run's snapshot as `audit-job run` takes it: (run id, seconds)."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            run_id = await run_store.create_run(conn, trigger="manual")
        started = time.monotonic()
        settings = Settings(database=DatabaseSettings(url=url))
        await take_snapshot(engine, run_id, settings, None, None)
        return run_id, time.monotonic() - started
    finally:
        await engine.dispose()


async def write_chunk(url: str, run_id: int, after: int, count: int) -> tuple[float, int]:
    """Claim `count` pending rows after id `after` and write their answers in batches, as
    a run does: (answers/s, the last id written)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:  # the pool's first connection, out of the timing
            await conn.execute(text("SELECT 1"))
        written, started = 0, time.monotonic()
        now = datetime.now(UTC)
        while written < count:
            async with engine.begin() as conn:
                rows = await bulk.pending_rows(conn, run_id, after, WRITE_BATCH)
            if not rows:
                break
            after = rows[-1][0]
            answers = [
                (row_id, app, user, _answer(row_id, now), expect)
                for row_id, app, user, expect in rows
            ]
            async with engine.begin() as conn:
                await results.write_results(conn, run_id, answers)
            written += len(rows)
        return written / (time.monotonic() - started), after
    finally:
        await engine.dispose()


def _answer(row_id: int, now: datetime) -> CheckResult:
    active = bool(row_id % 3)
    return CheckResult(
        status=CheckStatus.ACTIVE if active else CheckStatus.INACTIVE,
        active=active,
        checked_at=now,
        attempts=1,
        http_status=200,
        status_code=200,
        api_code=200,
        message=None,
        request_id="r",
        latency_ms=9,
    )


def writes_against(layout: Layout, base: Layout, pairs: int, key: str = "empty") -> None:
    """A new run on the layout and one on `base` (the database holding only the targets, or
    one earlier run), their writes in alternating chunks (so the host's drift falls on both
    alike): medians and the median of the per-round ratios, as figures named by `key`."""
    run_id, snap = asyncio.run(new_run(layout.url))
    base_run, base_snap = asyncio.run(new_run(base.url))
    chunk = max(WRITE_BATCH, pairs // 40)
    ours: list[float] = []
    theirs: list[float] = []
    after = base_after = 0
    for number in range(WRITE_ROUNDS):
        mine_first = number % 2 == 0
        for mine in (mine_first, not mine_first):
            if mine:
                rate, after = asyncio.run(write_chunk(layout.url, run_id, after, chunk))
                ours.append(rate)
            else:
                rate, base_after = asyncio.run(write_chunk(base.url, base_run, base_after, chunk))
                theirs.append(rate)
    if key == "empty":
        layout.figures["snapshot_s"] = snap
        layout.figures["write_per_s"] = statistics.median(ours)
    layout.figures[f"{key}_snapshot_s"] = base_snap
    layout.figures[f"{key}_write_per_s"] = statistics.median(theirs)
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    layout.figures[f"{key}_write_ratio"] = statistics.median(ratios)
    asyncio.run(forget_run(base, base_run))


async def forget_run(layout: Layout, run_id: int) -> None:
    """The base database is as it was again, for the next layout."""
    engine = create_engine(layout.url)
    try:
        async with engine.begin() as conn:
            if await partitions.drop_run_partition(conn, run_id) is None:
                await conn.execute(text(f"DELETE FROM session_check WHERE run_id = {run_id}"))
            await conn.execute(text(f"DELETE FROM audit_run WHERE id = {run_id}"))
    finally:
        await engine.dispose()


async def time_services(layout: Layout) -> None:
    """The same reports in this process (no interpreter start-up): the store's own time."""
    settings = Settings(database=DatabaseSettings(url=layout.url))
    user = "user-0000000@example.com"

    async def drain(rows: Any) -> int:
        return sum([1 async for _ in rows])

    async def changes() -> int:
        run_id, base = await report_service.resolve_changes(settings, None, None)
        return await drain(report_service.changes(settings, run_id, base))

    steps = {
        "runs": lambda: report_service.runs(settings, 20),
        "report": lambda: report_service.report(settings),
        "changes": changes,
        "history": lambda: drain(report_service.history(settings, "app-00", user)),
        "results_error_csv": lambda: drain(report_service.results(settings, status="error")),
    }
    for name, step in steps.items():
        best = float("inf")
        for _ in range(3):
            started = time.monotonic()
            await step()
            best = min(best, time.monotonic() - started)
        layout.figures[f"{name}_in_process"] = best


async def age_oldest(url: str, count: int) -> None:
    """Make the oldest `count` runs 40 days old and the rest recent, for prune."""
    engine = create_engine(url)
    old, recent = datetime.now(UTC) - timedelta(days=40), datetime.now(UTC)
    try:
        async with engine.begin() as conn:
            aged = case((audit_run.c.id <= count, old), else_=recent)
            await conn.execute(update(audit_run).values(started_at=aged))
    finally:
        await engine.dispose()


async def size_mb(layout: Layout) -> float:
    engine = create_engine(layout.url)
    try:
        async with engine.connect() as conn:
            if layout.kind == "pg":
                found = await conn.execute(text("SELECT pg_database_size(current_database())"))
            else:
                found = await conn.execute(
                    text(
                        "SELECT SUM(data_length + index_length) FROM information_schema.tables "
                        "WHERE table_schema = DATABASE()"
                    )
                )
            return float(found.scalar_one()) / 1e6
    finally:
        await engine.dispose()


async def check_layout(layout: Layout) -> None:
    engine = create_engine(layout.url)
    try:
        async with engine.connect() as conn:
            assert await partitions.is_partitioned(conn) == layout.partitioned, layout.label
    finally:
        await engine.dispose()


def measure(
    layout: Layout, base: Layout, runs: int, pairs: int, one_run: Layout | None = None
) -> None:
    print(f"  {layout.label}: building {runs} runs x {pairs:,} pairs", flush=True)
    asyncio.run(create_database(layout))
    asyncio.run(check_layout(layout))
    layout.figures["build_s"] = asyncio.run(build(layout, runs, pairs))
    layout.figures["size_mb"] = asyncio.run(size_mb(layout))
    time_reports(layout, runs)
    asyncio.run(time_services(layout))
    writes_against(layout, base, pairs)
    if one_run is not None:  # history's size alone: the same work, one earlier run
        writes_against(layout, one_run, pairs, "one_run")
    asyncio.run(age_oldest(layout.url, PRUNED))
    layout.figures["prune_10_s"] = cli(layout, "prune", "--keep-days", "30")[0]
    layout.figures["size_after_prune_mb"] = asyncio.run(size_mb(layout))


def measure_empty(layout: Layout, pairs: int, runs: int = 0) -> None:
    """The database holding only the targets (and the latest state), or `runs` earlier
    runs too, kept for the layouts' new runs to be compared with."""
    asyncio.run(create_database(layout))
    asyncio.run(build(layout, runs, pairs))
    if not runs:
        layout.figures["cli_start_s"] = min(cli(layout, "runs")[0] for _ in range(3))


ROWS = [
    ("runs", "runs", "s", 1.0),
    ("report", "report", "s", 1.0),
    ("changes", "changes of the latest run", "s", 1.0),
    ("history", "history APP USER", "s", 1.0),
    ("results_error_csv", "results --status error --format csv | wc -l", "s", None),
    ("results_error_rows", "  rows exported", "", None),
    ("prune_10_s", f"prune of the oldest {PRUNED} runs", "s", 5.0),
    ("snapshot_s", "new run: snapshot", "s", None),
    ("empty_snapshot_s", "  the same on the empty database", "s", None),
    ("write_per_s", "new run: answers written /s", "", None),
    ("empty_write_per_s", "  the same on the empty database", "", None),
    ("empty_write_ratio", "  ratio (median of alternating rounds)", "x", None),
    ("one_run_write_per_s", "  the same after one earlier run", "", None),
    ("one_run_write_ratio", "  ratio (median of alternating rounds)", "x", None),
    ("runs_in_process", "in process: runs", "s", None),
    ("report_in_process", "in process: report", "s", None),
    ("changes_in_process", "in process: changes", "s", None),
    ("history_in_process", "in process: history", "s", None),
    ("results_error_csv_in_process", "in process: results --status error", "s", None),
    ("size_mb", "size on disk, MB", "", None),
    ("size_after_prune_mb", "size after prune, MB", "", None),
    ("build_s", "build by SQL, s", "", None),
]


def show(layouts: list[Layout], empty: dict[str, Layout]) -> bool:
    print()
    print(f"  {'':<46}" + "".join(f"{lay.label:>24}" for lay in layouts))
    for key, label, unit, _goal in ROWS:
        cells = []
        for lay in layouts:
            value = lay.figures.get(key)
            cells.append(f"{'-' if value is None else f'{value:,.2f}{unit}':>24}")
        print(f"  {label:<46}" + "".join(cells))
    ok = True
    print()
    for base in empty.values():  # what every command above pays before its first query
        if base.figures.get("cli_start_s"):
            print(f"  {base.label}: `audit-job runs` (no runs) {base.figures['cli_start_s']:.2f} s")
    for lay in layouts:
        ratio = lay.figures.get("empty_write_ratio")
        if ratio is not None and lay.partitioned:
            ok &= _target(f"{lay.label}: writes vs empty", ratio >= 0.9, f"{ratio:.2f}x >= 0.90x")
        ratio = lay.figures.get("one_run_write_ratio")
        if ratio is not None:  # shown, not a target: what the history's size alone costs
            _target(f"{lay.label}: writes vs one earlier run", ratio >= 0.9, f"{ratio:.2f}x")
        if lay.partitioned:
            for key, label, _unit, goal in ROWS:
                if goal is None:
                    continue
                value = lay.figures[key]
                ok &= _target(f"{lay.label}: {label}", value < goal, f"{value:.2f} s < {goal:g} s")
                inner = lay.figures.get(f"{key}_in_process")
                if inner is not None:  # the same without the interpreter's start-up
                    _target(f"{lay.label}: {label}, in process", inner < goal, f"{inner:.2f} s")
    return ok


def _target(name: str, passed: bool, detail: str) -> bool:
    print(f"  {'PASS' if passed else 'FAIL'}  {name}: {detail}")
    return passed


def run_all(
    scale: float,
    runs: int,
    backends: set[str],
    mariadb_scale: float,
    keep: bool = False,
    unpartitioned: bool = True,
) -> tuple[list[Layout], dict[str, Layout], bool]:
    """Every layout of `backends` built, timed and shown; (layouts, empty ones, targets met)."""
    layouts: list[Layout] = []
    empty: dict[str, Layout] = {}
    if "postgresql" in backends:
        layouts.append(Layout("PG partitioned", "pg", True, True))
        if unpartitioned:
            layouts.append(Layout("PG unpartitioned", "pg", False, False))
        empty["pg"] = Layout("PG empty", "pg", True, True)
    if "mariadb" in backends:
        layouts.append(Layout("MariaDB", "my", False, True))
        empty["my"] = Layout("MariaDB empty", "my", False, True)
    one_run = Layout("PG one run", "pg", True, True)  # the partitioned layout's second base
    try:
        for lay in layouts:
            pairs = int(1_000_000 * (mariadb_scale if lay.kind == "my" else scale))
            base = empty[lay.kind]
            if not base.figures:  # once per backend, before its first layout
                print(f"  {base.label}: the targets only ({pairs:,} pairs)", flush=True)
                measure_empty(base, pairs)
            second = None
            if lay.kind == "pg" and lay.partitioned:
                print(f"  {one_run.label}: one run of {pairs:,} pairs", flush=True)
                measure_empty(one_run, pairs, runs=1)
                second = one_run
            measure(lay, base, runs, pairs, second)
            if not keep:
                asyncio.run(drop_database(lay))
        ok = show(layouts, empty)
    finally:
        if not keep:
            for lay in [*layouts, *empty.values(), one_run]:
                asyncio.run(drop_database(lay))
    return layouts, empty, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="pairs per run / 1,000,000")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--backend", default="postgresql,mariadb")
    parser.add_argument("--mariadb-scale", type=float, default=0.1)
    parser.add_argument("--keep", action="store_true", help="leave the databases")
    parser.add_argument(
        "--no-unpartitioned",
        action="store_true",
        help="skip PostgreSQL's unpartitioned layout (the comparison; half the build time)",
    )
    args = parser.parse_args()
    backends = {b.strip() for b in args.backend.split(",")}
    _layouts, _empty, ok = run_all(
        args.scale,
        args.runs,
        backends,
        args.mariadb_scale,
        args.keep,
        unpartitioned=not args.no_unpartitioned,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
