"""Two workers sharing one run on PostgreSQL (50 ms latency): exactly one final row per pair,
and twice the rate of one worker."""

from __future__ import annotations

import time
from pathlib import Path

from harness.databases import Databases, pg
from harness.processes import BASELINES, CLIENT_CORE, PY, reap, spawn
from harness.report import Report, heading
from harness.scenario import Context, Scenario
from harness.server import standin
from harness.tool import config_file, prepare, tool_env, write_targets


def measure(report: Report, dbs: Databases, folder: Path, pairs: int) -> None:
    heading(f"two workers sharing a run on PostgreSQL, 50 ms latency, {pairs:,} pairs")
    csv_path = folder / f"targets-{pairs}.csv"
    write_targets(csv_path, pairs)
    pg_url, dsn = dbs.postgres()
    rates: dict[int, float] = {}
    with standin(delay_ms=50) as server:
        config = config_file(
            folder, "workers", pg_url, server.url, heartbeat_seconds=1, dead_after_seconds=5
        )
        prepare(config, csv_path)
        for workers in (1, 2):
            joiners = []
            run_file = folder / f"run-id-{workers}"
            for _ in range(workers - 1):
                argv = [PY, BASELINES, "tool", "--wait-run-file", str(run_file), "--"]
                argv += ["worker", "--json", "--no-progress", "--run"]
                joiners.append(spawn(argv, tool_env(config), CLIENT_CORE))
            begun = time.perf_counter()
            owner = spawn(
                [PY, BASELINES, "tool", "--", "run", "--json", "--no-progress"],
                tool_env(config),
                CLIENT_CORE,
            )
            if joiners:
                run_id = None
                while run_id is None and owner.poll() is None:
                    rows = pg(
                        dsn,
                        "SELECT id FROM audit_run "
                        "WHERE status = 'running' AND snapshot_at IS NOT NULL",
                    )
                    run_id = rows[0]["id"] if rows else None
                    time.sleep(0.05)
                run_file.write_text(str(run_id))
            owner_result = reap(owner, begun)
            joined = [reap(j, begun) for j in joiners]
            for r in (owner_result, *joined):
                if r.exit_code != 0:
                    raise SystemExit(
                        f"two workers: a process failed (exit {r.exit_code}):\n{r.stderr[-3000:]}"
                    )
            run_id = pg(dsn, "SELECT max(id) AS id FROM audit_run")[0]["id"]
            row = pg(
                dsn,
                "SELECT count(*) AS answered, count(DISTINCT (app_id, user_id)) AS pairs, "
                "extract(epoch FROM max(checked_at) - min(checked_at)) AS span, "
                "count(*) FILTER (WHERE status = 'pending') AS pending "
                "FROM session_check WHERE run_id = $1",
                run_id,
            )[0]
            span = float(row["span"])
            rates[workers] = row["answered"] / span if span > 0 else 0.0
            exact = row["answered"] == pairs and row["pairs"] == pairs and row["pending"] == 0
            status = pg(dsn, "SELECT status FROM audit_run WHERE id = $1", run_id)[0]["status"]
            print(
                f"  {workers} worker(s): run {run_id} {status}, {row['answered']:,} rows for "
                f"{row['pairs']:,} distinct pairs, {row['pending']} pending, "
                f"{rates[workers]:,.0f} checks/s (first to last answer)",
                flush=True,
            )
            report.target(
                "two_workers",
                f"{workers} worker(s): exactly one final row per pair",
                float(exact),
                "1 (true)",
                exact and status == "succeeded",
            )
    speedup = rates[2] / rates[1] if rates[1] else 0.0
    report.data["scenarios"]["two_workers"] = {
        "pairs": pairs,
        "checks_per_second": rates,
        "speedup": speedup,
    }
    report.target("two_workers", "two workers / one worker", speedup, ">= 1.8x", speedup >= 1.8)


def run(ctx: Context) -> None:
    measure(ctx.report, ctx.dbs, ctx.folder, 3_000 if ctx.quick else 40_000)


SCENARIO = Scenario("two_workers", 60, run, postgres="required")
