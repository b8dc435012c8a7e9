"""50 ms latency: the share of the concurrency bound (64 in flight / 50 ms) the tool reaches,
beside the minimal loop and a raw asyncio client (the server's own ceiling)."""

from __future__ import annotations

from pathlib import Path

from harness.databases import Databases
from harness.processes import BASELINES, PY, STANDIN, base_env, run_child
from harness.report import Report, heading
from harness.scenario import Context, Scenario
from harness.server import standin, window
from harness.tool import (
    CONCURRENCY,
    config_file,
    prepare,
    tool_checks_per_second,
    tool_run,
    write_targets,
)


def measure(report: Report, dbs: Databases, folder: Path, pairs: int) -> None:
    bound = CONCURRENCY / 0.050
    heading(f"50 ms latency, concurrency {CONCURRENCY}: bound {bound:,.0f}/s, {pairs:,} pairs")
    csv_path = folder / f"targets-{pairs}.csv"
    write_targets(csv_path, pairs)
    with standin(delay_ms=50) as server:
        config = config_file(
            folder, "latency", dbs.sqlite("latency"), server.url, concurrency=CONCURRENCY
        )
        prepare(config, csv_path)
        server.reset()
        rate = tool_checks_per_second(tool_run(config))
        steady, _, _ = window(server.stats()["per_second"], 1)
        loop = run_child(
            [PY, BASELINES, "loop", "--pairs", str(pairs), "--url", server.url], base_env()
        )
        loop_rate = loop.report["checks"] / loop.report["seconds"]
        # What the server itself allows: its timers fire on whole milliseconds.
        raw = run_child([PY, STANDIN, "--load", server.url, "--seconds", "5"], base_env())
        raw_rate = float(raw.report.get("per_second", 0.0))
    print(
        f"  audit-job run {rate:,.0f}/s over the whole run ({steady:,.0f}/s in its steady "
        f"seconds, at the server); minimal loop {loop_rate:,.0f}/s; raw asyncio client "
        f"{raw_rate:,.0f}/s ({raw_rate / bound:.3f} of the bound: the server's own ceiling)"
    )
    report.data["scenarios"]["latency_50ms"] = {
        "bound": bound,
        "checks_per_second": rate,
        "steady_checks_per_second": steady,
        "loop_checks_per_second": loop_rate,
        "raw_client_per_second": raw_rate,
    }
    report.target(
        "latency",
        "share of the concurrency bound (whole run)",
        rate / bound,
        ">= 0.95",
        rate / bound >= 0.95,
        f"(the loop: {loop_rate / bound:.3f})",
    )


def run(ctx: Context) -> None:
    measure(ctx.report, ctx.dbs, ctx.folder, 2_000 if ctx.quick else 20_000)


SCENARIO = Scenario("latency", 30, run)
