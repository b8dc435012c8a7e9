"""The store at scale (benchmarks/store_scale.py): reports, prune and a new run's writes over
50 runs of 1,000,000 pairs on PostgreSQL, partitioned beside unpartitioned, and MariaDB at a
tenth of the size. It builds ~100 GB of writes and takes the best part of an hour at full
size, so it runs only when named: `make bench BENCH_ARGS="--only store_scale"` (`--scale`
for smaller sizes; `--quick`: 0.01)."""

from __future__ import annotations

from harness.mariadb import mariadb_reachable
from harness.report import heading
from harness.scenario import Context, Scenario
from store_scale import ROWS, run_all

RUNS = 50


def run(ctx: Context) -> None:
    scale = ctx.scale if ctx.scale is not None else (0.01 if ctx.quick else 1.0)
    backends = {"postgresql"} | ({"mariadb"} if mariadb_reachable() else set())
    heading(f"store at scale: {RUNS} runs x {int(1_000_000 * scale):,} pairs")
    layouts, empty, _ok = run_all(scale, RUNS, backends, scale / 10)
    for lay in layouts:
        if not lay.partitioned:
            continue
        for key, label, _unit, goal in ROWS:
            if goal is not None:
                value = lay.figures[key]
                ctx.report.target(
                    "store_scale", f"{label} ({lay.label})", value, f"< {goal:g} s", value < goal
                )
        ratio = lay.figures["empty_write_ratio"]
        ctx.report.target(
            "store_scale",
            f"new run's writes vs empty ({lay.label})",
            ratio,
            ">= 0.90x",
            ratio >= 0.9,
        )
    ctx.report.data["scenarios"]["store_scale"] = {
        "scale": scale,
        "runs": RUNS,
        "layouts": {lay.label: lay.figures for lay in [*layouts, *empty.values()]},
    }


SCENARIO = Scenario("store_scale", 95, run, postgres="required", default=False)
