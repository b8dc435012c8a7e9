"""Memory and snapshot time: 1,000,000 pairs on PostgreSQL, stopped with SIGINT after a
while (--million-seconds) unless told to run to the end."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from harness.databases import Databases, pg
from harness.processes import BASELINES, CLIENT_CORE, PY, reap, spawn
from harness.report import Report, heading
from harness.scenario import Context, Scenario
from harness.server import standin
from harness.tool import cli, config_file, tool_env


def measure(report: Report, dbs: Databases, folder: Path, pairs: int, seconds: float) -> None:
    heading(f"memory and snapshot: {pairs:,} pairs on PostgreSQL")
    pg_url, dsn = dbs.postgres()
    with standin() as server:
        config = config_file(folder, "million", pg_url, server.url)
        cli(config, "db", "upgrade")
        started = time.perf_counter()
        pg(
            dsn,
            "INSERT INTO audit_target (app_id, user_id, enabled, created_at) "
            "SELECT 'app-' || lpad((n % 50)::text, 2, '0'), "
            "'user-' || lpad(n::text, 9, '0') || '@example.com', true, now() "
            "FROM generate_series(0, $1 - 1) AS n",
            pairs,
        )
        print(f"  {pairs:,} targets inserted in {time.perf_counter() - started:.1f} s", flush=True)
        argv = [PY, BASELINES, "tool", "--", "run", "--json", "--no-progress"]
        begun = time.perf_counter()
        child = spawn(argv, tool_env(config), CLIENT_CORE)
        stopped_early = False
        if seconds > 0:
            deadline = begun + seconds
            while child.poll() is None and time.perf_counter() < deadline:
                time.sleep(0.2)
            if child.poll() is None:
                child.send_signal(signal.SIGINT)  # graceful: finish in flight, flush, exit 130
                stopped_early = True
        result = reap(child, begun)
    snapshot = None
    for line in result.stderr.splitlines():
        if "snapshot of" in line and "taken in" in line:
            snapshot = float(line.rsplit("taken in", 1)[1].split()[0])
    summary = result.report.get("summary") or {}
    exit_code = int(result.report.get("exit_code", result.exit_code))
    counts = summary.get("counts", {}) if isinstance(summary, dict) else {}
    checked = sum(v for k, v in counts.items() if k != "pending")
    rate = float(summary.get("checks_per_second", 0.0)) if isinstance(summary, dict) else 0.0
    how = (
        f"stopped with SIGINT after {seconds:.0f} s, {checked:,} checked"
        if stopped_early
        else f"ran to the end, {checked:,} checked"
    )
    print(f"  run: {how}, {rate:,.0f} checks/s, exit {exit_code}")
    report.data["scenarios"]["million"] = {
        "pairs": pairs,
        "snapshot_seconds": snapshot,
        "peak_rss_mb": result.maxrss_mb,
        "checked": checked,
        "checks_per_second": rate,
        "stopped_early_after_seconds": seconds if stopped_early else None,
        "exit_code": exit_code,
    }
    if exit_code not in (0, 130) or snapshot is None:
        print(result.stderr[-3000:])
    report.target(
        "million", "peak RSS MB", result.maxrss_mb, "<= 100 MB", result.maxrss_mb <= 100, how
    )
    report.target(
        "million",
        "snapshot seconds (PostgreSQL)",
        snapshot if snapshot is not None else float("nan"),
        "<= 15 s",
        snapshot is not None and snapshot <= 15,
    )


def run(ctx: Context) -> None:
    seconds = ctx.million_seconds
    if seconds is None:
        seconds = 10 if ctx.quick else 60
    measure(ctx.report, ctx.dbs, ctx.folder, 50_000 if ctx.quick else 1_000_000, seconds)


SCENARIO = Scenario("million", 20, run, postgres="required")
