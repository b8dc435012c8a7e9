"""A server limit below the configured rate, not told to the tool: after 10 s it runs near
the limit, without a storm of 429s."""

from __future__ import annotations

from pathlib import Path

from harness.databases import Databases
from harness.report import Report, heading
from harness.scenario import Context, Scenario
from harness.server import standin, window
from harness.tool import config_file, prepare, tool_checks_per_second, tool_run, write_targets


def measure(
    report: Report, dbs: Databases, folder: Path, limit: int, configured: int, seconds: int
) -> None:
    pairs = limit * seconds
    heading(
        f"server limit {limit:,}/s below the configured {configured:,}/s (not told), "
        f"{pairs:,} pairs"
    )
    csv_path = folder / f"targets-{pairs}.csv"
    write_targets(csv_path, pairs)
    with standin(limit=limit) as server:
        config = config_file(
            folder, "rate-lower", dbs.sqlite("rate-lower"), server.url, rate_per_second=configured
        )
        prepare(config, csv_path)
        server.reset()
        tool_checks_per_second(tool_run(config))
        stats = server.stats()
    achieved, ok, throttled = window(stats["per_second"], 10)
    share_after = throttled / max(1, ok + throttled)
    per_second = stats["per_second"]
    print("  accepted/throttled per second: " + " ".join(f"{a}/{t}" for a, t in per_second))
    print(
        f"  after the first 10 s: {achieved:,.0f} accepted/s, "
        f"{share_after:.1%} of requests answered 429"
    )
    report.data["scenarios"]["rate_lower"] = {
        "limit": limit,
        "configured": configured,
        "achieved_after_10s": achieved,
        "share_429_after_10s": share_after,
        "server": stats,
    }
    report.target(
        "rate_lower",
        "achieved / limit after 10 s",
        achieved / limit,
        ">= 0.85",
        achieved / limit >= 0.85,
    )
    report.target(
        "rate_lower",
        "share answered 429 after 10 s (no storm)",
        share_after,
        "<= 0.05",
        share_after <= 0.05,
    )


def run(ctx: Context) -> None:
    measure(ctx.report, ctx.dbs, ctx.folder, 1_500, 3_000, 13 if ctx.quick else 25)


SCENARIO = Scenario("rate_lower", 50, run)
