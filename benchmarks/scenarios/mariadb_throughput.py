"""MariaDB against PostgreSQL end to end: `audit-job run` of the same pairs against the
stand-in, the two backends in interleaved rounds (the order reversed every other round),
the ratio of their median checks/s (target: MariaDB >= 0.8x PostgreSQL)."""

from __future__ import annotations

import statistics

from harness import mariadb
from harness.report import heading
from harness.scenario import Context, Scenario
from harness.server import standin
from harness.tool import config_file, prepare, tool_checks_per_second, tool_run, write_targets

PAIRS, QUICK_PAIRS = 20_000, 5_000
ROUNDS, QUICK_ROUNDS = 3, 1
GOAL = 0.8


def run(ctx: Context) -> None:
    if not mariadb.mariadb_reachable():
        heading("mariadb_throughput: skipped (MariaDB not reachable)")
        return
    pairs = QUICK_PAIRS if ctx.quick else PAIRS
    rounds = ctx.rounds or (QUICK_ROUNDS if ctx.quick else ROUNDS)
    heading(f"MariaDB vs PostgreSQL: audit-job run of {pairs:,} pairs, {rounds} rounds")
    csv_path = ctx.folder / f"targets-mariadb-{pairs}.csv"
    write_targets(csv_path, pairs)
    name, my_url = mariadb.create()
    try:
        with standin() as server:
            pg_url, _dsn = ctx.dbs.postgres()
            configs = {
                "PostgreSQL": config_file(ctx.folder, "mt-pg", pg_url, server.url),
                "MariaDB": config_file(ctx.folder, "mt-my", my_url, server.url),
            }
            for config in configs.values():
                prepare(config, csv_path)
            rates: dict[str, list[float]] = {label: [] for label in configs}
            for number in range(1, rounds + 1):
                order = list(configs) if number % 2 else list(configs)[::-1]
                for label in order:
                    rate = tool_checks_per_second(tool_run(configs[label]))
                    rates[label].append(rate)
                    print(f"  round {number}: {label:<11} {rate:>9,.0f} checks/s", flush=True)
    finally:
        mariadb.drop(name)
    medians = {label: statistics.median(values) for label, values in rates.items()}
    ratio = medians["MariaDB"] / medians["PostgreSQL"]
    pg_rate, my_rate = medians["PostgreSQL"], medians["MariaDB"]
    print(f"  medians: PostgreSQL {pg_rate:,.0f}/s, MariaDB {my_rate:,.0f}/s", flush=True)
    ctx.report.target(
        "mariadb_throughput", "MariaDB / PostgreSQL checks/s", ratio, f">= {GOAL}x", ratio >= GOAL
    )
    ctx.report.data["scenarios"]["mariadb_throughput"] = {
        "pairs": pairs,
        "rates": rates,
        "ratio": ratio,
    }


SCENARIO = Scenario("mariadb_throughput", 35, run, postgres="required")
