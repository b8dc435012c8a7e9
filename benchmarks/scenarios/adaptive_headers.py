"""Rate-limit headers: the emulator states its budget (`--rate-limit-headers ietf`, a token
bucket of 300/s and 30 described as a quota over the next second), the tool is configured at
1,000/s on its defaults, 6,000 pairs, learning off so that the run starts at the cap: pacing
by the headers reaches >= 95 % of the limit after the first second, with no 429s beyond the
first second's (before the first answer told the budget: <= 0.1 % of all requests)."""

from __future__ import annotations

from harness.emulator import emulator
from harness.report import heading
from harness.scenario import Context, Scenario
from harness.server import window
from harness.tool import config_file, prepare, tool_checks_per_second, tool_run, write_targets


def run(ctx: Context) -> None:
    report, name, pairs = ctx.report, "adaptive_headers", 3000 if ctx.quick else 6000
    heading(
        f"rate-limit headers: configured 1,000/s, server 300/s (bucket 30) stating its budget "
        f"in RateLimit headers, {pairs:,} pairs"
    )
    csv_path = ctx.folder / f"targets-{pairs}.csv"
    write_targets(csv_path, pairs)
    with emulator(rate=300, burst=30, rate_limit_headers="ietf") as server:
        config = config_file(
            ctx.folder,
            name,
            ctx.dbs.sqlite(name),
            server.url,
            rate_per_second=1000,
            use_learned_rate="false",
        )
        prepare(config, csv_path)
        server.reset()
        child = tool_run(config)
        tool_checks_per_second(child)
        stats = server.stats()
    achieved, _, later_429 = window(stats["per_second"], 1)
    share = stats["throttled"] / max(1, stats["check_requests"])
    print(
        f"  {achieved:,.1f} accepted/s after 1 s; {stats['throttled']} of "
        f"{stats['check_requests']:,} requests answered 429 ({share:.2%}), {later_429} after "
        f"the first second"
    )
    print(
        "    accepted/throttled per second: " + " ".join(f"{a}/{t}" for a, t in stats["per_second"])
    )
    report.data["scenarios"][name] = {"achieved": achieved, "share_429": share}
    report.target(name, "accepted / limit after 1 s", achieved / 300, ">= 0.95", achieved >= 285)
    report.target(name, "share of all requests answered 429", share, "<= 0.001", share <= 0.001)


SCENARIO = Scenario("adaptive_headers", 56, run)
