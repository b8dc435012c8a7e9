"""Throughput: audit-job run against the minimal aiohttp loop (asyncio and uvloop, with and
without a database) and the official Python SDK, 20,000 pairs in interleaved rounds, with the
stand-in's own capacity to show that it is not the bound."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from harness.databases import Databases
from harness.processes import BASELINES, PY, STANDIN, base_env, run_child
from harness.report import Report, Series, heading
from harness.scenario import Context, Scenario
from harness.server import standin
from harness.tool import (
    CONCURRENCY,
    config_file,
    prepare,
    tool_checks_per_second,
    tool_run,
    write_targets,
)

# Rounds: five by default, so that one disturbed round cannot move a median; on a host so
# slow that they would not fit `make bench` in 10 minutes, no more than fit in this.
ROUNDS = 5
MIN_ROUNDS = 3
ROUNDS_BUDGET_SECONDS = 240


def measure(
    report: Report, dbs: Databases, folder: Path, pairs: int, rounds: int, use_pg: bool
) -> None:
    heading(
        f"throughput: {pairs:,} pairs, concurrency {CONCURRENCY}, signature mode, {rounds} rounds"
    )
    csv_path = folder / f"targets-{pairs}.csv"
    write_targets(csv_path, pairs)
    sdk_pairs = max(500, pairs // 5)
    with standin() as server:
        sqlite_url = dbs.sqlite("throughput")
        sqlite_cfg = config_file(folder, "throughput-sqlite", sqlite_url, server.url)
        prepare(sqlite_cfg, csv_path)
        pg_cfg = pg_dsn = None
        if use_pg:
            pg_url, pg_dsn = dbs.postgres()
            pg_cfg = config_file(folder, "throughput-pg", pg_url, server.url)
            prepare(pg_cfg, csv_path)
        loop_sqlite = dbs.sqlite("loop")
        # Each tool variant runs next to the loop it is compared with, and every other round
        # runs in reverse order, so that the host's drift (up to 2x on a shared VM) falls on
        # both sides of a ratio alike; ratios are taken per round.
        variants: list[tuple[str, list[str] | tuple[Path, str]]] = [
            ("loop (uvloop)", ["loop", "--pairs", str(pairs), "--uvloop"]),
            ("audit-job run, SQLite (uvloop)", (sqlite_cfg, "default")),
        ]
        if pg_cfg is not None and pg_dsn is not None:
            loop_pg = pg_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
            variants += [
                ("audit-job run, PostgreSQL (uvloop)", (pg_cfg, "default")),
                (
                    "loop + PostgreSQL (uvloop)",
                    ["loop", "--pairs", str(pairs), "--uvloop", "--db", loop_pg],
                ),
            ]
        variants += [
            (
                "loop + SQLite (uvloop)",
                ["loop", "--pairs", str(pairs), "--uvloop", "--db", loop_sqlite],
            ),
            ("loop (asyncio)", ["loop", "--pairs", str(pairs)]),
            ("audit-job run, SQLite (asyncio)", (sqlite_cfg, "asyncio")),
            (
                f"official Python SDK, 32 threads ({sdk_pairs:,} pairs)",
                ["sdk", "--pairs", str(sdk_pairs)],
            ),
        ]
        series = {label: Series(label) for label, _ in variants}
        begun = time.perf_counter()
        done_rounds = 0
        for round_number in range(1, rounds + 1):
            if round_number > MIN_ROUNDS and time.perf_counter() - begun > ROUNDS_BUDGET_SECONDS:
                print(f"  (a slow host: stopping after {done_rounds} rounds)", flush=True)
                break
            done_rounds = round_number
            print(f"  round {round_number}/{rounds}", flush=True)
            ordered = variants if round_number % 2 else variants[::-1]
            for label, how in ordered:
                if isinstance(how, tuple):
                    child = tool_run(how[0], loop=how[1])
                    rate = tool_checks_per_second(child)
                    checks = int(child.report["summary"]["total"])
                    series[label].add(
                        checks, checks / rate, child.report["cpu_seconds"], child.maxrss_mb
                    )
                else:
                    child = run_child([PY, BASELINES, *how, "--url", server.url], base_env())
                    if child.exit_code != 0:
                        raise SystemExit(f"{label} failed:\n{child.stderr[-3000:]}")
                    rep = child.report
                    series[label].add(
                        rep["checks"], rep["seconds"], rep["cpu_seconds"], child.maxrss_mb
                    )
                print(
                    f"    {label:<46} {series[label].checks_per_second[-1]:>9,.0f} checks/s",
                    flush=True,
                )
        # The stand-in's own capacity, loaded from the client core.
        load = run_child([PY, STANDIN, "--load", server.url, "--seconds", "2"], base_env())
        standin_rate = float(load.report.get("per_second", 0.0))

    print()
    print(
        f"  {'client':<46} {'checks/s median':>15} {'(min-max)':>17} "
        f"{'CPU s/10k':>9} {'peak RSS MB':>11}"
    )
    for s in series.values():
        d = s.as_dict()
        c = d["checks_per_second"]
        spread = f"({c['min']:,.0f}-{c['max']:,.0f})"
        print(
            f"  {s.label:<46} {c['median']:>15,.0f} {spread:>17} "
            f"{d['cpu_seconds_per_10k']:>9.2f} {d['peak_rss_mb']:>11.1f}"
        )
    fastest = max(s.median for s in series.values())
    print(
        f"  stand-in capacity (raw asyncio load, {CONCURRENCY} connections, other core): "
        f"{standin_rate:,.0f} requests/s = {standin_rate / fastest:.1f}x the fastest client"
    )
    report.data["scenarios"]["throughput"] = {
        "pairs": pairs,
        "sdk_pairs": sdk_pairs,
        "rounds": done_rounds,
        "series": {s.label: s.as_dict() for s in series.values()},
        "standin_requests_per_second": standin_rate,
    }
    m = {label: s.median for label, s in series.items()}
    sdk_label = next(label for label in m if label.startswith("official"))

    def per_round(a: str, b: str) -> list[float]:
        return [
            x / y
            for x, y in zip(series[a].checks_per_second, series[b].checks_per_second, strict=True)
        ]

    ratios: dict[str, Any] = {}

    def ratio(a: str, b: str, goal: float | None, note: str = "") -> None:
        rounds_ = per_round(a, b)
        value = statistics.median(rounds_)
        best = max(series[a].checks_per_second) / max(series[b].checks_per_second)
        spread = f"(rounds {min(rounds_):.2f}-{max(rounds_):.2f}; best of each {best:.2f})"
        short_b = "official SDK" if b == sdk_label else b
        ratios[f"{a} / {short_b}"] = {"median": value, "rounds": rounds_, "best": best}
        if goal is None:
            print(f"    {a} / {short_b}: {value:.2f}x {spread}")
        else:
            report.target(
                "throughput",
                f"{a} vs {short_b}{note}",
                value,
                f">= {goal:g}x",
                value >= goal,
                spread,
            )

    print("  ratios (median of the per-round ratios):")
    # The baseline: the minimal loop on the standard event loop, against the tool as
    # shipped (uvloop is a dependency).
    ratio("audit-job run, SQLite (uvloop)", "loop (asyncio)", 0.9)
    if "audit-job run, PostgreSQL (uvloop)" in m:
        ratio("audit-job run, PostgreSQL (uvloop)", "loop (asyncio)", 0.9)
    # Like for like, the same event loop on both sides (stricter: the loop gains more from
    # uvloop than the tool, whose database work it does not speed up).
    ratio("audit-job run, SQLite (asyncio)", "loop (asyncio)", 0.9)
    stricter = " (stricter: the loop on uvloop too)"
    ratio("audit-job run, SQLite (uvloop)", "loop (uvloop)", 0.9, stricter)
    if "audit-job run, PostgreSQL (uvloop)" in m:
        ratio("audit-job run, PostgreSQL (uvloop)", "loop (uvloop)", 0.9, stricter)
    # Against the official SDK.
    ratio("audit-job run, SQLite (uvloop)", sdk_label, 7)
    if "audit-job run, PostgreSQL (uvloop)" in m:
        ratio("audit-job run, PostgreSQL (uvloop)", sdk_label, 7)
    # For reference: what the database costs the minimal loop itself on this host, and the
    # tool against the loop that writes to the same database.
    ratio("audit-job run, SQLite (uvloop)", "loop + SQLite (uvloop)", None)
    if "audit-job run, PostgreSQL (uvloop)" in m:
        ratio("audit-job run, PostgreSQL (uvloop)", "loop + PostgreSQL (uvloop)", None)
    for db_label in ("loop + SQLite (uvloop)", "loop + PostgreSQL (uvloop)"):
        if db_label in m:
            ratio(db_label, "loop (uvloop)", None)
    ratio("loop (uvloop)", "loop (asyncio)", None)
    ratio(sdk_label, "loop (asyncio)", None)
    report.data["scenarios"]["throughput"]["ratios"] = ratios
    report.target(
        "throughput",
        "stand-in capacity / fastest client",
        standin_rate / fastest,
        ">= 3x (the server is not the bound)",
        standin_rate / fastest >= 3,
    )


def run(ctx: Context) -> None:
    rounds = ctx.rounds or (1 if ctx.quick else ROUNDS)
    measure(ctx.report, ctx.dbs, ctx.folder, 2_000 if ctx.quick else 20_000, rounds, ctx.use_pg)


SCENARIO = Scenario("throughput", 10, run, postgres="optional")
