"""A server limit equal to the configured rate: the tool reaches it without 429s."""

from __future__ import annotations

from pathlib import Path

from harness.databases import Databases
from harness.report import Report, heading
from harness.scenario import Context, Scenario
from harness.server import standin, window
from harness.tool import config_file, prepare, tool_checks_per_second, tool_run, write_targets


def measure(report: Report, dbs: Databases, folder: Path, limit: int, seconds: int) -> None:
    pairs = limit * seconds
    heading(f"configured rate = server limit = {limit:,}/s, {pairs:,} pairs")
    csv_path = folder / f"targets-{pairs}.csv"
    write_targets(csv_path, pairs)
    with standin(limit=limit) as server:
        config = config_file(
            folder, "rate-equal", dbs.sqlite("rate-equal"), server.url, rate_per_second=limit
        )
        prepare(config, csv_path)
        server.reset()
        tool_checks_per_second(tool_run(config))
        stats = server.stats()
    achieved, _, _ = window(stats["per_second"], 1)
    share_429 = stats["throttled"] / max(1, stats["requests"])
    print(
        f"  server saw {achieved:,.0f} accepted/s (steady seconds), "
        f"{stats['throttled']} answered 429 of {stats['requests']:,}"
    )
    report.data["scenarios"]["rate_equal"] = {"limit": limit, "achieved": achieved, "server": stats}
    report.target(
        "rate_equal", "achieved / limit", achieved / limit, ">= 0.97", achieved / limit >= 0.97
    )
    report.target("rate_equal", "share answered 429", share_429, "<= 0.005", share_429 <= 0.005)


def run(ctx: Context) -> None:
    measure(ctx.report, ctx.dbs, ctx.folder, 2_000, 3 if ctx.quick else 10)


SCENARIO = Scenario("rate_equal", 40, run)
