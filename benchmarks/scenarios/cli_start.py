"""How fast the command line answers: the wall time of a real subprocess for `audit-job
--help`, a command's help and `audit-job runs --limit 1` on a small SQLite database, beside
`python -c pass` and `python -m pip --version` started the same way.

Every command runs once per round, rounds interleaved (the host's drift falls on all of them
alike), unpinned, as from a shell: the first rounds warm the file cache and are not counted.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.processes import PY
from harness.report import heading
from harness.scenario import Context, Scenario
from harness.server import standin
from harness.tool import cli, config_file, prepare, tool_env, write_targets

REPETITIONS, WARMUPS = 15, 2
QUICK_REPETITIONS, QUICK_WARMUPS = 5, 1
PAIRS = 20  # the database's one run: enough for `runs` to print a real row


@dataclass
class Command:
    label: str
    argv: list[str]
    goal_seconds: float | None = None  # None: a reference, no target
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def audit_job() -> str:
    """The console script users run, installed next to this interpreter."""
    script = Path(PY).parent / "audit-job"
    if not script.exists():
        raise SystemExit(f"cli_start: {script} not found (is audit-job installed here?)")
    return str(script)


def timed(command: Command, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command.argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0 or (command.goal_seconds is not None and not result.stdout.strip()):
        raise SystemExit(
            f"cli_start: {command.label} failed (exit {result.returncode}):\n"
            f"{result.stderr[-2000:]}"
        )
    return elapsed


def check_one_run(tool: str, config: Path) -> None:
    """`runs --limit 1` is timed printing a real row: the database holds one finished run."""
    argv = [tool, "runs", "--limit", "1", "--format", "json"]
    result = subprocess.run(argv, env=tool_env(config), capture_output=True, text=True)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 or len(rows) != 1 or rows[0].get("status") != "succeeded":
        raise SystemExit(
            f"cli_start: the database's run is missing or unfinished: {result.stdout[-500:]}"
            f"{result.stderr[-2000:]}"
        )


def measure(ctx: Context, repetitions: int, warmups: int) -> None:
    report, folder = ctx.report, ctx.folder
    heading(
        f"command-line start: wall time of a real subprocess, median (min) of {repetitions} "
        f"after {warmups} warm-up(s)"
    )
    tool = audit_job()
    csv_path = folder / f"targets-{PAIRS}.csv"
    write_targets(csv_path, PAIRS)
    with standin() as server:
        config = config_file(folder, "cli-start", ctx.dbs.sqlite("cli-start"), server.url)
        prepare(config, csv_path)
        cli(config, "run", "--no-progress")
    check_one_run(tool, config)
    commands = [
        Command("python -c pass", [PY, "-c", "pass"]),
        Command("python -m pip --version", [PY, "-m", "pip", "--version"]),
        Command("audit-job --help", [tool, "--help"], 0.25),
        Command("audit-job run --help", [tool, "run", "--help"], 0.25),
        Command("audit-job runs --limit 1", [tool, "runs", "--limit", "1"], 0.5),
    ]
    env = tool_env(config)  # the references ignore it; `runs` reads the database it names
    for round_number in range(warmups + repetitions):
        for command in commands:
            elapsed = timed(command, env)
            if round_number >= warmups:
                command.seconds.append(elapsed)
    python, pip = commands[0].median, commands[1].median
    print(
        f"  {'command':<26} {'median s':>9} {'min s':>7} "
        f"{'/ python -c pass':>17} {'/ pip --version':>16}"
    )
    for c in commands:
        print(
            f"  {c.label:<26} {c.median:>9.3f} {min(c.seconds):>7.3f} "
            f"{c.median / python:>16.1f}x {c.median / pip:>15.2f}x"
        )
    figures: dict[str, Any] = {}
    for c in commands:
        figures[c.label] = {
            "argv": [Path(c.argv[0]).name, *c.argv[1:]],
            "median_seconds": c.median,
            "min_seconds": min(c.seconds),
            "max_seconds": max(c.seconds),
            "seconds": c.seconds,
            "vs_python_c_pass": c.median / python,
            "vs_pip_version": c.median / pip,
        }
    report.data["scenarios"]["cli_start"] = {
        "repetitions": repetitions,
        "warmups": warmups,
        "commands": figures,
    }
    for c in commands:
        if c.goal_seconds is not None:
            report.target(
                "cli_start",
                f"{c.label}: seconds (median)",
                c.median,
                f"<= {c.goal_seconds:g} s",
                c.median <= c.goal_seconds,
                f"(min {min(c.seconds):.3f} s; {c.median / python:.1f}x python -c pass, "
                f"{c.median / pip:.2f}x pip --version)",
            )


def run(ctx: Context) -> None:
    if ctx.quick:
        measure(ctx, QUICK_REPETITIONS, QUICK_WARMUPS)
    else:
        measure(ctx, REPETITIONS, WARMUPS)


SCENARIO = Scenario("cli_start", 70, run)
