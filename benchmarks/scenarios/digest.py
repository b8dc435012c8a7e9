"""The cost of a run's digest (the hash chain's step when a run ends), against the run.

The digest reads every check of the run in canonical order when the run ends; it must cost
at most 10 % of the run's duration. The run's duration is taken from this invocation's own
measurement of `audit-job run` (the throughput scenario's median on that backend, else the
million scenario's rate); without either, the figures are printed with no target.
"""

from __future__ import annotations

import asyncio
from typing import Any

from digest_cost import measure
from harness.report import Report, heading
from harness.scenario import Context, Scenario

SIZES = (20_000, 1_000_000)
QUICK_SIZES = (20_000, 100_000)
GOAL = 0.10


def measured_rate(report: Report, backend: str) -> tuple[float | None, str]:
    """The tool's checks/s on `backend` as measured earlier in this invocation."""
    scenarios: dict[str, Any] = report.data["scenarios"]
    label = "SQLite" if backend == "sqlite" else "PostgreSQL"
    series = scenarios.get("throughput", {}).get("series", {})
    shipped = series.get(f"audit-job run, {label} (uvloop)")
    if shipped:
        return shipped["checks_per_second"]["median"], "the throughput scenario's median"
    million = scenarios.get("million", {})
    if backend == "postgresql" and million.get("checks_per_second"):
        return million["checks_per_second"], "the million scenario's run"
    return None, "no run measured in this invocation"


def run(ctx: Context) -> None:
    sizes = QUICK_SIZES if ctx.quick else SIZES
    backends = ["sqlite"] + (["postgresql"] if ctx.use_pg else [])
    heading("the run digest: its cost when a run ends, against the run's duration")
    print(f"  {'backend':<11} {'checks':>9} {'digest s':>9} {'rows/s':>10} {'peak MB':>8}  share")
    results: dict[str, Any] = {}
    for backend in backends:
        rate, source = measured_rate(ctx.report, backend)
        for rows in sizes:
            seconds, count, _digest, peak = asyncio.run(measure(backend, rows, 0))
            assert count == rows, (count, rows)
            share = seconds / (rows / rate) if rate else None
            shown = f"{share:.1%} of a {rows / rate:,.0f} s run at {rate:,.0f}/s" if rate else ""
            print(
                f"  {backend:<11} {rows:>9,} {seconds:>9.2f} {rows / seconds:>10,.0f} "
                f"{peak:>8.1f}  {shown}",
                flush=True,
            )
            results[f"{backend}:{rows}"] = {"seconds": seconds, "peak_mb": peak, "share": share}
            if share is not None:
                ctx.report.target(
                    "digest",
                    f"digest of {rows:,} checks / the run ({backend})",
                    share,
                    f"<= {GOAL:.0%}",
                    share <= GOAL,
                    f"({seconds:.2f} s; run rate from {source})",
                )
    ctx.report.data["scenarios"]["digest"] = results


SCENARIO = Scenario("digest", 90, run, postgres="optional")
