"""`make bench`: audit-job against the raw aiohttp ceiling and the official SDK (issue 7).

    .venv/bin/python benchmarks/run.py [--quick] [--rounds 5] [--no-pg] [--no-install]
                                       [--million-seconds 60] [--skip SCENARIO ...]

Installs what it needs (the `test` extra), starts the loopback stand-in
(benchmarks/standin.py) pinned to one core and every client on the other, and runs, in one
invocation: the 20,000-pair throughput comparison in interleaved rounds, 1,000,000 pairs for
memory and snapshot time, 50 ms latency, a server limit equal to the configured rate, a server
limit lower than the configured rate, and two workers sharing one run on PostgreSQL. It
prints a table per scenario with targets and PASS/FAIL, and writes
benchmarks/results/latest.json. PostgreSQL (AUDIT_JOB_BENCH_PG_ADMIN, default
postgresql://postgres@127.0.0.1:5432/test) is used when reachable; a scratch database is
created and dropped.

Measurement: each client is a child process; checks/s counts the work only (the tool's own
summary: from the end of the snapshot to the end of the run, final flush included; the
baselines time their loop); CPU s per 10,000 checks is the child's user + system time over
the same span (the tool's snapshot and database setup included, interpreter start and imports
not); peak RSS is the child's ru_maxrss (whole life).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
BASELINES = str(HERE / "baselines.py")
STANDIN = str(HERE / "standin.py")
RESULTS = HERE / "results" / "latest.json"
KEY_ID, SECRET = "bench-key", "bench-secret"
CONCURRENCY = 64
# Throughput rounds: five by default, so that one disturbed round cannot move a median; on a
# host so slow that they would not fit `make bench` in 10 minutes, no more than fit in this.
ROUNDS = 5
MIN_ROUNDS = 3
ROUNDS_BUDGET_SECONDS = 240


# -- environment -------------------------------------------------------------------------------


def ensure_installed(skip: bool) -> None:
    needed = ["audit_job", "uvloop", "authing", "websockets", "psutil", "aiohttp"]
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if not missing or skip:
        return
    print(f"installing the test extra (missing: {', '.join(missing)})", flush=True)
    subprocess.run([PY, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[test]"], check=True)


def cores() -> tuple[int | None, int | None]:
    """(server core, client core), or Nones when the process cannot pin to two cores."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


SERVER_CORE, CLIENT_CORE = cores()


def pin(pid: int, core: int | None) -> None:
    if core is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {core})


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "server_core": SERVER_CORE,
        "client_core": CLIENT_CORE,
    }


# -- children ----------------------------------------------------------------------------------


@dataclass
class Child:
    exit_code: int
    report: dict[str, Any]
    maxrss_mb: float
    stderr: str
    wall_seconds: float


def spawn(argv: list[str], env: dict[str, str], core: int | None) -> subprocess.Popen[bytes]:
    # No preexec_fn: it would force fork() and a copy of our RSS into the child's maxrss.
    child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pin(child.pid, core)
    return child


def reap(child: subprocess.Popen[bytes], started: float, timeout: float = 900) -> Child:
    out, err = child.communicate(timeout=timeout)
    # communicate() reaps via waitpid; rusage of the reaped child comes from RUSAGE_CHILDREN
    # deltas, too coarse with several children, so the child reports maxrss itself below.
    report: dict[str, Any] = {}
    lines = out.decode("utf-8", "replace").strip().splitlines()
    if lines:
        with contextlib.suppress(ValueError):
            report = json.loads(lines[-1])
    return Child(
        child.returncode,
        report,
        float(report.get("maxrss_mb", 0.0)),
        err.decode("utf-8", "replace"),
        time.perf_counter() - started,
    )


def run_child(argv: list[str], env: dict[str, str], core: int | None = CLIENT_CORE) -> Child:
    started = time.perf_counter()
    return reap(spawn(argv, env, core), started)


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIT_JOB_", "AUTHING_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# -- the stand-in ------------------------------------------------------------------------------


class Standin:
    def __init__(self, delay_ms: float = 0.0, limit: int = 0) -> None:
        argv = [PY, STANDIN, "--delay-ms", str(delay_ms), "--limit", str(limit)]
        if SERVER_CORE is not None:
            argv += ["--cpu", str(SERVER_CORE)]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if not line or line[0] != "READY":
            raise SystemExit("benchmarks/standin.py did not start")
        self.url = f"http://127.0.0.1:{line[1]}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/__stats", timeout=10) as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        req = urllib.request.Request(self.url + "/__reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def close(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def standin(delay_ms: float = 0.0, limit: int = 0) -> Iterator[Standin]:
    server = Standin(delay_ms, limit)
    try:
        yield server
    finally:
        server.close()


# -- databases ---------------------------------------------------------------------------------


def pg_admin_dsn() -> str:
    return os.environ.get("AUDIT_JOB_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")


async def _pg(dsn: str, statement: str, *args: Any) -> Any:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=3)
    try:
        return await conn.fetch(statement, *args)
    finally:
        await conn.close()


def pg(dsn: str, statement: str, *args: Any) -> Any:
    return asyncio.run(_pg(dsn, statement, *args))


def pg_reachable() -> bool:
    try:
        pg(pg_admin_dsn(), "SELECT 1")
    except Exception as exc:
        print(f"postgresql: not reachable ({type(exc).__name__}: {exc}); skipped", flush=True)
        return False
    return True


class Databases:
    """Scratch databases, dropped at exit."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pg_names: list[str] = []

    def sqlite(self, name: str) -> str:
        return f"sqlite+aiosqlite:///{self.folder / name}.db"

    def postgres(self) -> tuple[str, str]:
        """(SQLAlchemy URL, asyncpg DSN) of a new empty database."""
        name = f"audit_job_bench_{uuid.uuid4().hex[:8]}"
        pg(pg_admin_dsn(), f'CREATE DATABASE "{name}"')
        self.pg_names.append(name)
        dsn = pg_admin_dsn().rsplit("/", 1)[0] + "/" + name
        return dsn.replace("postgresql://", "postgresql+asyncpg://", 1), dsn

    def drop_all(self) -> None:
        for name in self.pg_names:
            with contextlib.suppress(Exception):
                pg(pg_admin_dsn(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pair_at(n: int) -> tuple[str, str]:
    return f"app-{n % 50:02d}", f"user-{n:09d}@example.com"


def write_targets(path: Path, pairs: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("app_id,user_id\n")
        for start in range(0, pairs, 100_000):
            out.write(
                "".join(
                    "{},{}\n".format(*pair_at(n)) for n in range(start, min(pairs, start + 100_000))
                )
            )


def config_file(folder: Path, name: str, db_url: str, host: str, **audit: Any) -> Path:
    settings = {"concurrency": CONCURRENCY, "rate_per_second": 1_000_000, **audit}
    lines = [
        "[authing]",
        f'host = "{host}"',
        f'access_key_id = "{KEY_ID}"',
        f'access_key_secret = "{SECRET}"',
        'auth = "signature"',
        "[audit]",
        *(f"{key} = {value}" for key, value in settings.items()),
        "[database]",
        f'url = "{db_url}"',
    ]
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def tool_env(config: Path) -> dict[str, str]:
    env = base_env()
    env["AUDIT_JOB_CONFIG"] = str(config)
    return env


def cli(config: Path, *args: str) -> None:
    result = subprocess.run(
        [PY, "-m", "audit_job", *args], env=tool_env(config), capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"audit-job {' '.join(args)} failed:\n{result.stderr[-2000:]}")


def prepare(config: Path, targets_csv: Path) -> None:
    cli(config, "db", "upgrade")
    cli(config, "targets", "import", str(targets_csv))


def tool_run(
    config: Path, *args: str, loop: str = "default", core: int | None = CLIENT_CORE
) -> Child:
    argv = [PY, BASELINES, "tool", "--loop", loop, "--", "run", "--json", "--no-progress", *args]
    return run_child(argv, tool_env(config), core)


def tool_checks_per_second(child: Child) -> float:
    summary = child.report.get("summary")
    if child.exit_code != 0 or not isinstance(summary, dict):
        raise SystemExit(f"audit-job run failed (exit {child.exit_code}):\n{child.stderr[-3000:]}")
    return float(summary["checks_per_second"])


# -- results -----------------------------------------------------------------------------------


@dataclass
class Series:
    label: str
    checks_per_second: list[float] = field(default_factory=list)
    cpu_per_10k: list[float] = field(default_factory=list)
    maxrss_mb: list[float] = field(default_factory=list)

    def add(self, checks: int, seconds: float, cpu_seconds: float, maxrss_mb: float) -> None:
        self.checks_per_second.append(checks / seconds)
        self.cpu_per_10k.append(cpu_seconds / checks * 10_000)
        self.maxrss_mb.append(maxrss_mb)

    @property
    def median(self) -> float:
        return statistics.median(self.checks_per_second) if self.checks_per_second else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "checks_per_second": {
                "median": self.median,
                "min": min(self.checks_per_second, default=0.0),
                "max": max(self.checks_per_second, default=0.0),
                "rounds": self.checks_per_second,
            },
            "cpu_seconds_per_10k": statistics.median(self.cpu_per_10k) if self.cpu_per_10k else 0,
            "peak_rss_mb": max(self.maxrss_mb, default=0.0),
        }


@dataclass
class Target:
    scenario: str
    what: str
    value: float
    goal: str
    ok: bool
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "what": self.what,
            "value": self.value,
            "target": self.goal,
            "status": "PASS" if self.ok else "FAIL",
            "note": self.note,
        }


class Report:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {"machine": machine(), "scenarios": {}, "targets": []}
        self.targets: list[Target] = []

    def target(self, scenario: str, what: str, value: float, goal: str, ok: bool, note: str = ""):  # type: ignore[no-untyped-def]
        entry = Target(scenario, what, value, goal, ok, note)
        self.targets.append(entry)
        self.data["targets"].append(entry.as_dict())
        status = "PASS" if ok else "FAIL"
        print(f"  [{status}] {what}: {value:,.3g} (target {goal}) {note}", flush=True)

    def save(self) -> None:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(self.data, indent=2, default=str) + "\n")


def heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


# -- scenarios ---------------------------------------------------------------------------------


def scenario_throughput(
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
    stricter = " (stricter than the issue's target)"
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


def scenario_million(
    report: Report, dbs: Databases, folder: Path, pairs: int, seconds: float
) -> None:
    heading(f"memory and snapshot: {pairs:,} pairs on PostgreSQL")
    pg_url, dsn = dbs.postgres()
    with standin() as server:
        config = config_file(folder, "million", pg_url, server.url)
        cli(config, "db", "upgrade")
        started = time.perf_counter()
        pg(
            dsn,
            "INSERT INTO audit_target (app_id, user_id, enabled, created_at) "
            "SELECT 'app-' || lpad((n % 50)::text, 2, '0'), "
            "'user-' || lpad(n::text, 9, '0') || '@example.com', true, now() "
            "FROM generate_series(0, $1 - 1) AS n",
            pairs,
        )
        print(f"  {pairs:,} targets inserted in {time.perf_counter() - started:.1f} s", flush=True)
        argv = [PY, BASELINES, "tool", "--", "run", "--json", "--no-progress"]
        begun = time.perf_counter()
        child = spawn(argv, tool_env(config), CLIENT_CORE)
        stopped_early = False
        if seconds > 0:
            deadline = begun + seconds
            while child.poll() is None and time.perf_counter() < deadline:
                time.sleep(0.2)
            if child.poll() is None:
                child.send_signal(signal.SIGINT)  # graceful: finish in flight, flush, exit 130
                stopped_early = True
        result = reap(child, begun)
    snapshot = None
    for line in result.stderr.splitlines():
        if "snapshot of" in line and "taken in" in line:
            snapshot = float(line.rsplit("taken in", 1)[1].split()[0])
    summary = result.report.get("summary") or {}
    exit_code = int(result.report.get("exit_code", result.exit_code))
    counts = summary.get("counts", {}) if isinstance(summary, dict) else {}
    checked = sum(v for k, v in counts.items() if k != "pending")
    rate = float(summary.get("checks_per_second", 0.0)) if isinstance(summary, dict) else 0.0
    how = (
        f"stopped with SIGINT after {seconds:.0f} s, {checked:,} checked"
        if stopped_early
        else f"ran to the end, {checked:,} checked"
    )
    print(f"  run: {how}, {rate:,.0f} checks/s, exit {exit_code}")
    report.data["scenarios"]["million"] = {
        "pairs": pairs,
        "snapshot_seconds": snapshot,
        "peak_rss_mb": result.maxrss_mb,
        "checked": checked,
        "checks_per_second": rate,
        "stopped_early_after_seconds": seconds if stopped_early else None,
        "exit_code": exit_code,
    }
    if exit_code not in (0, 130) or snapshot is None:
        print(result.stderr[-3000:])
    report.target(
        "million", "peak RSS MB", result.maxrss_mb, "<= 100 MB", result.maxrss_mb <= 100, how
    )
    report.target(
        "million",
        "snapshot seconds (PostgreSQL)",
        snapshot if snapshot is not None else float("nan"),
        "<= 15 s",
        snapshot is not None and snapshot <= 15,
    )


def scenario_latency(report: Report, dbs: Databases, folder: Path, pairs: int) -> None:
    bound = CONCURRENCY / 0.050
    heading(f"50 ms latency, concurrency {CONCURRENCY}: bound {bound:,.0f}/s, {pairs:,} pairs")
    csv_path = folder / f"targets-{pairs}.csv"
    write_targets(csv_path, pairs)
    with standin(delay_ms=50) as server:
        config = config_file(folder, "latency", dbs.sqlite("latency"), server.url)
        prepare(config, csv_path)
        server.reset()
        rate = tool_checks_per_second(tool_run(config))
        steady, _, _ = _window(server.stats()["per_second"], 1)
        loop = run_child(
            [PY, BASELINES, "loop", "--pairs", str(pairs), "--url", server.url], base_env()
        )
        loop_rate = loop.report["checks"] / loop.report["seconds"]
        # What the server itself allows: its timers fire on whole milliseconds.
        raw = run_child([PY, STANDIN, "--load", server.url, "--seconds", "5"], base_env())
        raw_rate = float(raw.report.get("per_second", 0.0))
    print(
        f"  audit-job run {rate:,.0f}/s over the whole run ({steady:,.0f}/s in its steady "
        f"seconds, at the server); minimal loop {loop_rate:,.0f}/s; raw asyncio client "
        f"{raw_rate:,.0f}/s ({raw_rate / bound:.3f} of the bound: the server's own ceiling)"
    )
    report.data["scenarios"]["latency_50ms"] = {
        "bound": bound,
        "checks_per_second": rate,
        "steady_checks_per_second": steady,
        "loop_checks_per_second": loop_rate,
        "raw_client_per_second": raw_rate,
    }
    report.target(
        "latency",
        "share of the concurrency bound (whole run)",
        rate / bound,
        ">= 0.95",
        rate / bound >= 0.95,
        f"(the loop: {loop_rate / bound:.3f})",
    )


def _window(per_second: list[list[int]], skip: int) -> tuple[float, int, int]:
    """Mean accepted/s and totals over the run's whole seconds after its first `skip`,
    counted from the first busy second (partial: the run starts mid-second, after the
    tool's start-up), ignoring the last (partial) second and the idle tail."""
    busy = [i for i, (ok, throttled) in enumerate(per_second) if ok + throttled]
    if not busy:
        return 0.0, 0, 0
    seconds = per_second[busy[0] + skip : busy[-1]]  # the last busy second is partial
    if not seconds:
        return 0.0, 0, 0
    ok = sum(s[0] for s in seconds)
    throttled = sum(s[1] for s in seconds)
    return ok / len(seconds), ok, throttled


def scenario_rate_equal(
    report: Report, dbs: Databases, folder: Path, limit: int, seconds: int
) -> None:
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
    achieved, _, _ = _window(stats["per_second"], 1)
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


def scenario_rate_lower(
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
    achieved, ok, throttled = _window(stats["per_second"], 10)
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


def scenario_two_workers(report: Report, dbs: Databases, folder: Path, pairs: int) -> None:
    heading(f"two workers sharing a run on PostgreSQL, 50 ms latency, {pairs:,} pairs")
    csv_path = folder / f"targets-{pairs}.csv"
    write_targets(csv_path, pairs)
    pg_url, dsn = dbs.postgres()
    rates: dict[int, float] = {}
    with standin(delay_ms=50) as server:
        config = config_file(
            folder, "workers", pg_url, server.url, heartbeat_seconds=1, dead_after_seconds=5
        )
        prepare(config, csv_path)
        for workers in (1, 2):
            joiners = []
            run_file = folder / f"run-id-{workers}"
            for _ in range(workers - 1):
                argv = [PY, BASELINES, "tool", "--wait-run-file", str(run_file), "--"]
                argv += ["worker", "--json", "--no-progress", "--run"]
                joiners.append(spawn(argv, tool_env(config), CLIENT_CORE))
            begun = time.perf_counter()
            owner = spawn(
                [PY, BASELINES, "tool", "--", "run", "--json", "--no-progress"],
                tool_env(config),
                CLIENT_CORE,
            )
            if joiners:
                run_id = None
                while run_id is None and owner.poll() is None:
                    rows = pg(
                        dsn,
                        "SELECT id FROM audit_run "
                        "WHERE status = 'running' AND snapshot_at IS NOT NULL",
                    )
                    run_id = rows[0]["id"] if rows else None
                    time.sleep(0.05)
                run_file.write_text(str(run_id))
            owner_result = reap(owner, begun)
            joined = [reap(j, begun) for j in joiners]
            for r in (owner_result, *joined):
                if r.exit_code != 0:
                    raise SystemExit(
                        f"two workers: a process failed (exit {r.exit_code}):\n{r.stderr[-3000:]}"
                    )
            run_id = pg(dsn, "SELECT max(id) AS id FROM audit_run")[0]["id"]
            row = pg(
                dsn,
                "SELECT count(*) AS answered, count(DISTINCT (app_id, user_id)) AS pairs, "
                "extract(epoch FROM max(checked_at) - min(checked_at)) AS span, "
                "count(*) FILTER (WHERE status = 'pending') AS pending "
                "FROM session_check WHERE run_id = $1",
                run_id,
            )[0]
            span = float(row["span"])
            rates[workers] = row["answered"] / span if span > 0 else 0.0
            exact = row["answered"] == pairs and row["pairs"] == pairs and row["pending"] == 0
            status = pg(dsn, "SELECT status FROM audit_run WHERE id = $1", run_id)[0]["status"]
            print(
                f"  {workers} worker(s): run {run_id} {status}, {row['answered']:,} rows for "
                f"{row['pairs']:,} distinct pairs, {row['pending']} pending, "
                f"{rates[workers]:,.0f} checks/s (first to last answer)",
                flush=True,
            )
            report.target(
                "two_workers",
                f"{workers} worker(s): exactly one final row per pair",
                float(exact),
                "1 (true)",
                exact and status == "succeeded",
            )
    speedup = rates[2] / rates[1] if rates[1] else 0.0
    report.data["scenarios"]["two_workers"] = {
        "pairs": pairs,
        "checks_per_second": rates,
        "speedup": speedup,
    }
    report.target("two_workers", "two workers / one worker", speedup, ">= 1.8x", speedup >= 1.8)


# -- main --------------------------------------------------------------------------------------

SCENARIOS = ["throughput", "million", "latency", "rate_equal", "rate_lower", "two_workers"]


def main() -> int:
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
    parser.add_argument("--skip", nargs="*", default=[], choices=SCENARIOS)
    args = parser.parse_args()
    ensure_installed(args.no_install)
    quick = args.quick
    rounds = args.rounds or (1 if quick else ROUNDS)
    report = Report()
    info = report.data["machine"]
    print(
        f"machine: {info['nproc']} cores, {info['cpu']}, Python {info['python']}; "
        f"stand-in on core {SERVER_CORE}, clients on core {CLIENT_CORE}",
        flush=True,
    )
    use_pg = not args.no_pg and pg_reachable()
    report.data["postgresql"] = use_pg
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="audit-job-bench-") as tmp:
        folder = Path(tmp)
        dbs = Databases(folder)
        try:
            if "throughput" not in args.skip:
                scenario_throughput(report, dbs, folder, 2_000 if quick else 20_000, rounds, use_pg)
            if "million" not in args.skip and use_pg:
                seconds = args.million_seconds
                if seconds is None:
                    seconds = 10 if quick else 60
                scenario_million(report, dbs, folder, 50_000 if quick else 1_000_000, seconds)
            if "latency" not in args.skip:
                scenario_latency(report, dbs, folder, 2_000 if quick else 20_000)
            if "rate_equal" not in args.skip:
                scenario_rate_equal(report, dbs, folder, 2_000, 3 if quick else 10)
            if "rate_lower" not in args.skip:
                scenario_rate_lower(report, dbs, folder, 1_500, 3_000, 13 if quick else 25)
            if "two_workers" not in args.skip and use_pg:
                scenario_two_workers(report, dbs, folder, 3_000 if quick else 40_000)
        finally:
            dbs.drop_all()
            report.data["seconds"] = time.perf_counter() - started
            report.save()
    heading(f"summary ({time.perf_counter() - started:.0f} s; {RESULTS.relative_to(ROOT)})")
    for t in report.targets:
        status = "PASS" if t.ok else "FAIL"
        print(f"  [{status}] {t.scenario}: {t.what}: {t.value:,.3g} (target {t.goal})")
    failed = sum(not t.ok for t in report.targets)
    print(f"  {len(report.targets) - failed} of {len(report.targets)} targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
