"""`make bench`: audit-job against the raw aiohttp ceiling, the official SDK, and its targets.

    .venv/bin/python benchmarks/run.py [--quick] [--rounds 5] [--no-pg] [--no-install]
                                       [--million-seconds 60] [--skip SCENARIO ...]
                                       [--only SCENARIO[,SCENARIO]] [--scale 1.0]

Installs what it needs (the `test` extra), starts the loopback stand-in
(benchmarks/standin.py) pinned to one core and every client on the other, and runs, in one
invocation: the 20,000-pair throughput comparison in interleaved rounds, 1,000,000 pairs for
memory and snapshot time, 50 ms latency, a server limit equal to the configured rate, a server
limit lower than the configured rate, two workers sharing one run on PostgreSQL, MariaDB
against PostgreSQL end to end, and how fast the command line starts. `store_scale` (reports
and prune over 50 runs of 1,000,000 pairs; long) runs only when named: `--only store_scale`.
It prints a table per scenario with targets and PASS/FAIL, and writes
benchmarks/results/latest.json. PostgreSQL (AUDIT_JOB_BENCH_PG_ADMIN, default
postgresql://postgres@127.0.0.1:5432/test) is used when reachable; a scratch database is
created and dropped. `--quick` shrinks every scenario: a smoke check, whose figures are not
comparable with a full run.

Measurement: each client is a child process; checks/s counts the work only (the tool's own
summary: from the end of the snapshot to the end of the run, final flush included; the
baselines time their loop); CPU s per 10,000 checks is the child's user + system time over
the same span (the tool's snapshot and database setup included, interpreter start and imports
not); peak RSS is the child's ru_maxrss (whole life).

Each scenario is a module of benchmarks/scenarios/ (see its __init__.py); the shared parts
are in benchmarks/harness/.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from harness.databases import Databases, pg_reachable
from harness.processes import CLIENT_CORE, SERVER_CORE, ensure_installed
from harness.report import Report, heading
from harness.scenario import Context, Scenario
from scenarios import discover

NOT_COMPARABLE = "quick: every scenario shrunk, a smoke check; not comparable with a full run"


def parse_args(scenarios: list[Scenario]) -> argparse.Namespace:
    names = [s.name for s in scenarios]

    def name_list(text: str) -> list[str]:
        chosen = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in names]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(
                f"unknown scenario {', '.join(unknown) or repr(text)} (choose from "
                f"{', '.join(names)})"
            )
        return chosen

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shrink everything: a smoke check")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--no-install", action="store_true")
    parser.add_argument(
        "--million-seconds",
        type=float,
        default=None,
        help="stop the 1,000,000-pair run after this long (0: run to the end)",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=names)
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="store_scale: pairs per run / 1,000,000 (default 1.0; 0.01 with --quick)",
    )
    parser.add_argument(
        "--only",
        type=name_list,
        default=None,
        metavar="NAME[,NAME]",
        help=f"run only these scenarios ({', '.join(names)})",
    )
    return parser.parse_args()


def main() -> int:
    scenarios = discover()
    args = parse_args(scenarios)
    selected = [
        s
        for s in scenarios
        if (s.name in args.only if args.only is not None else s.default) and s.name not in args.skip
    ]
    ensure_installed(args.no_install)
    report = Report()
    report.data["quick"] = args.quick
    info = report.data["machine"]
    print(
        f"machine: {info['nproc']} cores, {info['cpu']}, Python {info['python']}; "
        f"stand-in on core {SERVER_CORE}, clients on core {CLIENT_CORE}",
        flush=True,
    )
    if args.quick:
        print(NOT_COMPARABLE, flush=True)
    wants_pg = any(s.postgres != "no" for s in selected)
    use_pg = not args.no_pg and wants_pg and pg_reachable()
    report.data["postgresql"] = use_pg
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="audit-job-bench-") as tmp:
        folder = Path(tmp)
        dbs = Databases(folder)
        context = Context(
            report, dbs, folder, args.quick, args.rounds, args.million_seconds, use_pg, args.scale
        )
        try:
            for scenario in selected:
                if scenario.postgres == "required" and not use_pg:
                    if args.only is not None:  # asked for by name: say why nothing follows
                        heading(f"{scenario.name}: skipped (needs PostgreSQL)")
                    continue
                scenario.run(context)
        finally:
            dbs.drop_all()
            report.data["seconds"] = time.perf_counter() - started
            report.save()
    report.print_summary(
        time.perf_counter() - started, f" [{NOT_COMPARABLE}]" if args.quick else ""
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
