"""Full speed without tuning, against the tool's emulator (token bucket, capacity model,
per-second counts), on the defaults (`concurrency = "auto"`) but for the rate:

- unknown lower limit: configured 1,000/s, the server 300/s with a bucket of 30, 6,000
  pairs, at the emulator's own latency and at 50 ms: >= 95 % of 300/s after the first 5 s,
  <= 1 % of all requests answered 429;
- warm start: a second run against the same server starts at the learned rate: >= 95 % of
  300/s from its first whole second, <= 0.5 % 429s;
- latency 5/50/200/500 ms, rate_per_second 500: >= 95 % of 500/s in the steady seconds,
  the in-flight peak <= 1.5x what Little's law needs (checks/s x the median latency);
- a server serving 50 requests at once (the rest queue) at 20 ms, configured far above it:
  >= 90 % of its 2,500/s, latency median <= 2x the 20 ms base (no congestion collapse). A
  loaded host may not serve 2,500/s at all: the minimal loop at exactly 50 in flight measures
  what it does serve, in the same invocation, and the ratio to that is printed beside the
  nominal one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.emulator import EmulatorServer, emulator
from harness.processes import BASELINES, PY, base_env, run_child
from harness.report import heading
from harness.scenario import Context, Scenario
from harness.server import window
from harness.tool import config_file, prepare, tool_checks_per_second, tool_run, write_targets

AUTO = '"auto"'


def _run(config: Path, *args: str) -> dict[str, Any]:
    child = tool_run(config, *args)
    tool_checks_per_second(child)  # raises with the tool's stderr when the run failed
    return child.report["summary"]


def _share_429(stats: dict[str, Any]) -> float:
    return stats["throttled"] / max(1, stats["check_requests"])


def lower_limit(ctx: Context, delay_ms: float, pairs: int) -> None:
    report, name = ctx.report, f"adaptive_lower_{delay_ms:g}ms"
    heading(
        f"unknown lower limit, {delay_ms:g} ms latency: configured 1,000/s, server 300/s "
        f"(bucket 30), {pairs:,} pairs, then a warm second run"
    )
    csv_path = ctx.folder / f"targets-{pairs}.csv"
    write_targets(csv_path, pairs)
    with emulator(rate=300, burst=30, delay_ms=delay_ms) as server:
        config = config_file(
            ctx.folder,
            name,
            ctx.dbs.sqlite(name),
            server.url,
            concurrency=AUTO,
            rate_per_second=1000,
        )
        prepare(config, csv_path)
        figures: dict[str, Any] = {}
        for run, skip in (("cold", 5), ("warm", 1)):
            server.reset()
            summary = _run(config)
            stats = server.stats()
            achieved, _, _ = window(stats["per_second"], skip)
            share = _share_429(stats)
            print(
                f"  {run}: {achieved:,.1f} accepted/s after {skip} s, {share:.2%} of "
                f"{stats['check_requests']:,} requests answered 429; concurrency peak "
                f"{summary.get('concurrency_peak')}, learned start "
                f"{summary.get('learned_rate_per_second')}"
            )
            print(
                "    accepted/throttled per second: "
                + " ".join(f"{a}/{t}" for a, t in stats["per_second"])
            )
            figures[run] = {"achieved": achieved, "share_429": share, "summary": summary}
            goal = 0.01 if run == "cold" else 0.005
            report.target(
                name,
                f"{run}: accepted / limit after {skip} s",
                achieved / 300,
                ">= 0.95",
                achieved / 300 >= 0.95,
            )
            report.target(
                name,
                f"{run}: share of all requests answered 429",
                share,
                f"<= {goal}",
                share <= goal,
            )
        report.target(
            name,
            "warm: started at the learned rate (1 = yes)",
            float(figures["warm"]["summary"].get("learned_rate_per_second") is not None),
            "== 1",
            figures["warm"]["summary"].get("learned_rate_per_second") is not None,
        )
    report.data["scenarios"][name] = figures


def latency(ctx: Context, delay_ms: float, seconds: float) -> None:
    report, name = ctx.report, f"adaptive_latency_{delay_ms:g}ms"
    pairs = int(500 * seconds)
    heading(f"{delay_ms:g} ms latency, rate_per_second 500, concurrency auto, {pairs:,} pairs")
    csv_path = ctx.folder / f"targets-{pairs}.csv"
    write_targets(csv_path, pairs)
    with emulator(delay_ms=delay_ms) as server:
        config = config_file(
            ctx.folder,
            name,
            ctx.dbs.sqlite(name),
            server.url,
            concurrency=AUTO,
            rate_per_second=500,
        )
        prepare(config, csv_path)
        server.reset()
        summary = _run(config)
        stats = server.stats()
    steady, _, _ = window(stats["per_second"], 1)
    median_s = (summary["latency_ms"]["p50"] or 0) / 1000
    little = steady * median_s
    peak = summary.get("concurrency_peak") or 0
    print(
        f"  {steady:,.1f}/s in the steady seconds ({summary['checks_per_second']:,.1f}/s over "
        f"the whole run); median latency {median_s * 1000:.1f} ms, so Little's law needs "
        f"{little:.1f} in flight; peak {peak} in flight at the client, "
        f"{stats['max_in_flight']} at the server; limit at the end "
        f"{summary.get('concurrency_limit')}"
    )
    report.data["scenarios"][name] = {"steady": steady, "little": little, "summary": summary}
    report.target(name, "checks/s / 500", steady / 500, ">= 0.95", steady / 500 >= 0.95)
    ratio = peak / little if little > 0 else float("inf")
    report.target(name, "in-flight peak / Little's law", ratio, "<= 1.5", ratio <= 1.5)


def capacity(ctx: Context, pairs: int) -> None:
    report, name = ctx.report, "adaptive_capacity"
    heading(
        f"a server serving 50 at once at 20 ms (capacity 2,500/s), configured at 100,000/s, "
        f"{pairs:,} pairs; the minimal loop at 50 in flight against it, for what it serves here"
    )
    csv_path = ctx.folder / f"targets-{pairs}.csv"
    write_targets(csv_path, pairs)
    with emulator(capacity=50, delay_ms=20) as server:
        config = config_file(
            ctx.folder,
            name,
            ctx.dbs.sqlite(name),
            server.url,
            concurrency=AUTO,
            rate_per_second=100_000,
        )
        prepare(config, csv_path)
        # What this host gets from this server: the minimal loop, exactly 50 in flight (no
        # queue at the server, no client rules), in the same invocation, before and after.
        loops = [_loop_rate(server, pairs // 2)]
        server.reset()
        summary = _run(config)
        stats = server.stats()
        loops.append(_loop_rate(server, pairs // 2))
    measured = sum(loops) / len(loops)
    steady, _, _ = window(stats["per_second"], 1)
    median = summary["latency_ms"]["p50"] or 0
    print(
        f"  {steady:,.1f}/s in the steady seconds ({summary['checks_per_second']:,.1f}/s over "
        f"the whole run); median latency {median} ms at the client, "
        f"{stats['latency_ms']['p50']} ms at the server; peak {summary.get('concurrency_peak')}"
        f" in flight, {stats['max_queued']} queued at the server at most"
    )
    print(
        f"  the minimal loop at 50 in flight: {' and '.join(f'{r:,.0f}' for r in loops)} "
        f"checks/s (before and after), so this host serves {measured:,.0f}/s of the nominal "
        f"2,500/s"
    )
    report.data["scenarios"][name] = {
        "steady": steady,
        "summary": summary,
        "server": stats,
        "loop_checks_per_second": loops,
    }
    report.target(
        name, "checks/s / nominal capacity", steady / 2500, ">= 0.9", steady / 2500 >= 0.9
    )
    ratio = steady / measured if measured > 0 else 0.0
    report.target(
        name, "checks/s / capacity measured (minimal loop)", ratio, ">= 0.9", ratio >= 0.9
    )
    report.target(name, "latency median / base", median / 20, "<= 2", median / 20 <= 2)


def _loop_rate(server: EmulatorServer, pairs: int) -> float:
    """The minimal loop's checks/s at 50 in flight against `server`."""
    argv = [PY, BASELINES, "loop", "--url", server.url, "--pairs", str(pairs)]
    child = run_child([*argv, "--concurrency", "50"], base_env())
    if child.exit_code != 0:
        raise SystemExit(f"the minimal loop failed:\n{child.stderr[-3000:]}")
    return child.report["checks"] / child.report["seconds"]


def run(ctx: Context) -> None:
    quick = ctx.quick
    for delay_ms in (0, 50):
        lower_limit(ctx, delay_ms, 3000 if quick else 6000)
    for delay_ms in (5, 50, 200, 500):
        latency(ctx, delay_ms, 4 if quick else 10)
    capacity(ctx, 5000 if quick else 20_000)


SCENARIO = Scenario("adaptive", 55, run)
