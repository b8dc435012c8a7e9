"""The reporting commands as real subprocesses, on SQLite and PostgreSQL, in table, json
and csv: each output compared with SELECTs written here over the rows real runs made.
Plus a 200k-row export whose peak RSS must not grow with the row count."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest
from helpers import cli_env, run_cli, write_config
from pgsupport import PG_HOST, PG_PORT, PG_USER, drop_pg_database, fresh_pg_database, pg_url
from reporting_scenario import Scenario, build_scenario, checks_by_pair, expected_changes
from sqlalchemy import func, select, text, update

from audit_job.cli import main
from audit_job.store.engine import opened
from audit_job.store.tables import audit_run, audit_target, session_check

pytestmark = pytest.mark.timeout(120)
FORMATS = ("table", "json", "csv")


def as_json(value: Any) -> Any:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value


def as_csv(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(as_json(value))


def as_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def parse(fmt: str, out: str) -> list[dict[str, str]]:
    if fmt == "json":
        return [json.loads(line) for line in out.splitlines()]
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(out)))
    lines = [line for line in out.splitlines() if line.startswith(("┃", "│"))]
    header = [cell.strip() for cell in lines[0].strip("┃").split("┃")]
    return [
        dict(zip(header, (c.strip() for c in line.strip("│").split("│")), strict=True))
        for line in lines[1:]
    ]


def check_rows(fmt: str, out: str, expected: Sequence[dict[str, Any]]) -> None:
    """Output rows == expected rows, in order; the table shows a subset of the columns."""
    got = parse(fmt, out)
    assert len(got) == len(expected), out[:2000]
    convert = {"json": as_json, "csv": as_csv, "table": as_cell}[fmt]
    for shown, want in zip(got, expected, strict=True):
        if fmt == "json":
            assert set(shown) == set(want)
        keys = shown.keys() if fmt == "table" else want.keys()
        assert {k: shown[k] for k in keys} == {k: convert(want[k]) for k in keys}


@pytest.fixture
async def scenario(db_url: str, tmp_path: Path) -> Scenario:
    return await build_scenario(db_url, tmp_path)


def run_many(config: Path, commands: dict[str, list[str]]) -> dict[str, str]:
    """Each command through `audit_job.cli.main`, the entry point the console script calls,
    in this process: seventeen interpreter start-ups would cost more than the rest of
    the test. Exit codes, usage errors and streaming are checked in real subprocesses
    below."""
    outputs = {}
    for name, args in commands.items():
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            code = main(["--config", str(config), *args])
        assert code == 0, f"{args}: exit {code}"
        outputs[name] = captured.getvalue()
    return outputs


async def test_every_command_matches_the_rows(
    scenario: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # rich sizes tables from it: no wrapped cells
    config = write_config(tmp_path / "audit-job.toml", {"database": {"url": scenario.url}})
    first, second = scenario.run_ids
    pair = sorted(scenario.flipped)[0]
    commands = {}
    for fmt in FORMATS:
        commands[f"runs {fmt}"] = ["runs", "-f", fmt]
        commands[f"results {fmt}"] = ["results", "-f", fmt]
        commands[f"history {fmt}"] = ["history", *pair, "-f", fmt]
        commands[f"changes {fmt}"] = ["changes", "-f", fmt]
        commands[f"report {fmt}"] = ["report", "-f", fmt]
    commands["errors of run 1"] = ["results", "--run", str(first), "--status", "error", "-f", "csv"]
    commands["tokyo"] = ["results", "--app", "app-b", "--tz", "Asia/Tokyo", "-f", "json"]
    outputs = await asyncio.to_thread(run_many, config, commands)

    async with opened(scenario.url) as engine, engine.connect() as conn:
        runs = [
            dict(r._mapping)
            for r in await conn.execute(text("SELECT * FROM audit_run ORDER BY id DESC"))
        ]
        checks = [
            dict(r._mapping)
            for r in await conn.execute(
                select(session_check)
                .where(session_check.c.run_id == second)
                .order_by(session_check.c.id)
            )
        ]
        history = [
            dict(r._mapping)
            for r in await conn.execute(
                select(
                    session_check.c.run_id,
                    audit_run.c.started_at,
                    session_check.c.status,
                    session_check.c.active,
                    session_check.c.checked_at,
                )
                .join(audit_run, audit_run.c.id == session_check.c.run_id)
                .where(session_check.c.app_id == pair[0], session_check.c.user_id == pair[1])
                .order_by(session_check.c.run_id)
            )
        ]
        targets = {(r.app_id, r.user_id) for r in await conn.execute(select(audit_target))}
        errors_run_1 = (
            await conn.execute(
                select(func.count()).where(
                    session_check.c.run_id == first, session_check.c.status == "error"
                )
            )
        ).scalar_one()
    # runs come back in raw form from text() on SQLite: read them through the table type.
    async with opened(scenario.url) as engine, engine.connect() as conn:
        typed = {r.id: r for r in await conn.execute(select(audit_run))}
    expected_runs = []
    for raw in runs:
        row = typed[raw["id"]]
        duration = (
            round((row.finished_at - row.started_at).total_seconds(), 1)
            if row.finished_at
            else None
        )
        expected_runs.append(
            {
                "id": row.id,
                "trigger": row.trigger,
                "status": row.status,
                "started_at": row.started_at,
                "finished_at": row.finished_at,
                "duration_seconds": duration,
                "total": row.total,
                "active": row.active,
                "inactive": row.inactive,
                "failed": row.failed,
                "retries": row.retries,
                "throttled": row.throttled,
                "scheduled_for": row.scheduled_for,
                "missed_count": row.missed_count,
                "learned_rate_per_second": row.learned_rate_per_second,
                "message": row.message,
            }
        )
    # The table says where the rate started in words.
    table_runs = [
        {
            **r,
            "rate_start": ""
            if r["learned_rate_per_second"] is None
            else f"started at the learned rate {r['learned_rate_per_second']:.1f}/s",
        }
        for r in expected_runs
    ]
    assert [r["status"] for r in expected_runs][1] == "skipped_overlap"
    expected_checks = [
        # session_check.expect (the snapshot's expectation) is not part of `results`
        {k: v for k, v in row.items() if k not in ("id", "claimed_by", "expect")}
        for row in checks
    ]
    flip = "inactive->active" if history[1]["active"] else "active->inactive"
    expected_history = [
        {
            "run_id": h["run_id"],
            "run_started_at": h["started_at"],
            "status": h["status"],
            "active": h["active"],
            "checked_at": h["checked_at"],
            "change": change,
        }
        for h, change in zip(history, ["first_seen", flip], strict=True)
    ]
    changes = expected_changes(
        await checks_by_pair(scenario.url, first),
        await checks_by_pair(scenario.url, second),
        targets,
    )
    for fmt in FORMATS:
        check_rows(fmt, outputs[f"runs {fmt}"], table_runs if fmt == "table" else expected_runs)
        check_rows(fmt, outputs[f"results {fmt}"], expected_checks)
        check_rows(fmt, outputs[f"history {fmt}"], expected_history)
        got = {
            (r["app_id"], r["user_id"]): r["change"] for r in parse(fmt, outputs[f"changes {fmt}"])
        }
        assert got == changes
        report = {r["app_id"]: r for r in parse(fmt, outputs[f"report {fmt}"])}
        assert sorted(report) == ["app-a", "app-b", "app-c"]
        for app, row in report.items():
            mine = [c for c in checks if c["app_id"] == app]
            counts = {
                s: sum(c["status"] == s for c in mine) for s in ("active", "inactive", "error")
            }
            pct = round(100 * counts["active"] / (counts["active"] + counts["inactive"]), 1)
            want = {**counts, "total": len(mine), "active_pct": pct}
            convert = {"json": as_json, "csv": as_csv, "table": as_cell}[fmt]
            assert {k: row[k] for k in want} == {k: convert(v) for k, v in want.items()}
    assert len(parse("csv", outputs["errors of run 1"])) == errors_run_1 == len(scenario.errors)
    tokyo = parse("json", outputs["tokyo"])
    assert tokyo and all(r["checked_at"].endswith("+09:00") for r in tokyo)
    by_pair = {(c["app_id"], c["user_id"]): c for c in checks}
    for row in tokyo:
        moment = datetime.fromisoformat(row["checked_at"])
        assert moment == by_pair[(row["app_id"], row["user_id"])]["checked_at"]


async def test_usage_errors_say_what(scenario: Scenario, tmp_path: Path) -> None:
    config = write_config(tmp_path / "audit-job.toml", {"database": {"url": scenario.url}})
    cases = {
        ("results", "--status", "gone"): "--status: one of active, inactive, error, pending",
        ("results", "--since", "yesterday"): "--since: not a time, got 'yesterday'",
        ("runs", "--tz", "Mars/Olympus"): "--tz: unknown time zone",
        ("prune",): "give --keep-days N or set [retention] keep_days",
    }
    for args, message in cases.items():
        captured = io.StringIO()
        with contextlib.redirect_stderr(captured):
            code = await asyncio.to_thread(main, ["--config", str(config), *args])
        assert code == 2, captured.getvalue()
        assert message in captured.getvalue()
    # One real process for the exit code and the streams as a shell sees them.
    missing = run_cli("--config", str(config), "report", "--run", "99", env=cli_env())
    assert missing.returncode == 1, missing.stderr
    assert missing.stderr.strip() == "run 99 does not exist" and missing.stdout == ""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        args = ["--config", str(config), "prune", "--keep-days", "1", "--dry-run"]
        assert await asyncio.to_thread(main, args) == 0
    assert "would delete 0 checks of 0 runs" in captured.getvalue()


async def run_checks(url: str) -> dict[int, int]:
    async with opened(url) as engine, engine.connect() as conn:
        rows = await conn.execute(
            select(session_check.c.run_id, func.count()).group_by(session_check.c.run_id)
        )
        return dict(rows.all())


async def set_status(url: str, run_id: int, status: str) -> str:
    """Set a run's status; return the one it had."""
    async with opened(url) as engine, engine.begin() as conn:
        where = audit_run.c.id == run_id
        old = (await conn.execute(select(audit_run.c.status).where(where))).scalar_one()
        await conn.execute(update(audit_run).where(where).values(status=status))
    return old


async def test_prune_keep_days_zero_keeps_only_the_latest_and_running_runs(
    scenario: Scenario, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "audit-job.toml", {"database": {"url": scenario.url}})
    first, second = scenario.run_ids
    before = await run_checks(scenario.url)
    assert before[first] > 0 and before[second] > 0

    def prune(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("--config", str(config), "prune", "--keep-days", *args, env=cli_env())

    dry = await asyncio.to_thread(prune, "0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would delete {before[first]} checks of run {first}\n" in dry.stdout
    assert f"would delete {before[first]} checks of 1 runs started before" in dry.stdout
    assert await run_checks(scenario.url) == before

    # A running run is kept whatever its age, like the latest run.
    status = await set_status(scenario.url, first, "running")
    held = await asyncio.to_thread(prune, "0", "--dry-run")
    assert held.returncode == 0, held.stderr
    assert "would delete 0 checks of 0 runs" in held.stdout
    await set_status(scenario.url, first, status)

    done = await asyncio.to_thread(prune, "0")
    assert done.returncode == 0, done.stderr
    assert f"deleted {before[first]} checks of run {first}\n" in done.stdout
    assert await run_checks(scenario.url) == {second: before[second]}

    negative = await asyncio.to_thread(prune, "-1", "--dry-run")
    assert negative.returncode == 2
    assert negative.stderr.strip() == "--keep-days: must be an integer >= 0, got -1"
    assert negative.stdout == ""


def peak_rss_mb(args: list[str], out: Path) -> tuple[float, int]:
    """Run the CLI with stdout to a file; sample its RSS every 10 ms; (peak MB, lines)."""
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "audit_job", *args],
            stdout=sink,
            stderr=subprocess.PIPE,
            env=cli_env(),
        )
        watched = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.01)
        _, stderr = proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    with out.open("rb") as produced:
        lines = sum(1 for _ in produced)
    return peak / 2**20, lines


@pytest.fixture
async def pg_db(pg_template: str) -> AsyncIterator[str]:
    """PostgreSQL only: the export test is the slowest here, and the backend where a
    million-row export is realistic (the keyset paging is the same code on SQLite)."""
    name = await fresh_pg_database(pg_template)
    try:
        yield name
    finally:
        await drop_pg_database(name)


async def test_large_export_streams_in_bounded_memory(pg_db: str, tmp_path: Path) -> None:
    sizes = {"small": 50_000, "large": 200_000}
    run_ids = {}
    now = datetime.now(UTC)
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=pg_db)
    try:
        for name, size in sizes.items():
            run_ids[name] = await conn.fetchval(
                "INSERT INTO audit_run (trigger, status, started_at, finished_at, total, active,"
                " inactive, failed, retries, throttled)"
                " VALUES ('manual', 'succeeded', $1, $1, $2, 0, 0, 0, 0, 0) RETURNING id",
                now,
                size,
            )
            # COPY: the quickest way in; the rows look like a run's (every column set).
            await conn.copy_records_to_table(
                "session_check",
                columns=[
                    "run_id",
                    "app_id",
                    "user_id",
                    "status",
                    "active",
                    "checked_at",
                    "attempts",
                    "http_status",
                    "status_code",
                    "api_code",
                    "message",
                    "request_id",
                    "latency_ms",
                ],
                records=(
                    (
                        run_ids[name],
                        f"app-{n % 7}",
                        f"user-{n:07d}@example.com",
                        "inactive",
                        False,
                        now,
                        1,
                        200,
                        200,
                        200,
                        "ok",
                        f"req-{n}",
                        n % 300,
                    )
                    for n in range(size)
                ),
            )
    finally:
        await conn.close()
    config = write_config(tmp_path / "audit-job.toml", {"database": {"url": pg_url(pg_db)}})
    peaks = {}
    for fmt, name in (("csv", "small"), ("csv", "large"), ("json", "large")):
        args = ["--config", str(config), "results", "--run", str(run_ids[name]), "-f", fmt]
        peak, lines = peak_rss_mb(args, tmp_path / f"{name}.{fmt}")
        assert lines == sizes[name] + (fmt == "csv")  # csv: plus its header
        peaks[fmt, name] = peak
    assert max(peaks.values()) < 150, peaks
    # Four times the rows, about the same memory: the export does not accumulate.
    assert peaks["csv", "large"] - peaks["csv", "small"] < 20, peaks
    assert peaks["json", "large"] - peaks["csv", "small"] < 20, peaks
