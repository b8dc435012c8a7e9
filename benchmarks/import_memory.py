"""Peak memory and wall time of `audit-job targets import` on a 1,000,000-line CSV.

Figures, not assertions: the import streams its input in batches, so its peak RSS should
stay flat however long the file is. For scale, the same run measures a naive baseline:
a process that only reads the whole CSV into a Python list (what an importer that loads
first and inserts later would need before writing a single row).

    .venv/bin/python benchmarks/import_memory.py [--rows N] [--no-pg]

PostgreSQL is measured too when reachable (AUDIT_JOB_BENCH_PG_ADMIN, default
postgres@127.0.0.1:5432/test; a scratch database is created and dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

NAIVE_LOAD = """
import csv, sys
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
print(len(rows) - 1)
"""


@dataclass
class Measured:
    label: str
    seconds: float
    sampled_peak_mb: float
    maxrss_mb: float
    exit_code: int
    output: str


def measure(label: str, argv: list[str], env: dict[str, str]) -> Measured:
    """Run argv as a child and record its peak RSS two ways: psutil sampling every 10 ms,
    and wait4's ru_maxrss (exact, but on Linux never below this process's RSS at fork)."""
    import psutil

    started = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(child.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    watched = psutil.Process(child.pid)
    peak = 0
    while True:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.Error:
            break
        if watched.status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.01)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped above, not by Popen
    seconds = time.perf_counter() - started
    reader.join()
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, else KiB
    return Measured(
        label,
        seconds,
        peak / 2**20,
        usage.ru_maxrss * scale / 2**20,
        child.returncode,
        b"".join(chunks).decode("utf-8", "replace"),
    )


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("app_id,user_id\n")
        chunk = 100_000
        for start in range(0, rows, chunk):
            out.write(
                "".join(
                    f"app-{n % 50:02d},user-{n:09d}@example.com\n"
                    for n in range(start, min(rows, start + chunk))
                )
            )


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "audit_job", *args]


def import_into(label: str, url: str, csv_path: Path) -> list[Measured]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIT_JOB_", "AUTHING_"))}
    env["AUDIT_JOB_DATABASE_URL"] = url
    upgrade = measure(f"{label}: db upgrade", cli("db", "upgrade"), env)
    if upgrade.exit_code != 0:
        raise SystemExit(f"{label}: db upgrade failed:\n{upgrade.output}")
    first = measure(f"{label}: targets import", cli("targets", "import", str(csv_path)), env)
    again = measure(f"{label}: re-import", cli("targets", "import", str(csv_path)), env)
    return [upgrade, first, again]


def pg_admin_dsn() -> str:
    return os.environ.get("AUDIT_JOB_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")


async def pg_admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(pg_admin_dsn(), timeout=3)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args()

    results: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="audit-job-bench-") as tmp:
        folder = Path(tmp)
        csv_path = folder / "targets.csv"
        started = time.perf_counter()
        write_csv(csv_path, args.rows)
        size_mb = csv_path.stat().st_size / 1024 / 1024
        print(
            f"generated {args.rows:,} rows ({size_mb:.1f} MB) in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )

        results.append(
            measure(
                "baseline: interpreter only",
                [sys.executable, "-c", "pass"],
                dict(os.environ),
            )
        )
        results.append(
            measure(
                "baseline: naive list(csv.reader)",
                [sys.executable, "-c", NAIVE_LOAD, str(csv_path)],
                dict(os.environ),
            )
        )
        results += import_into("sqlite", f"sqlite+aiosqlite:///{folder}/bench.db", csv_path)

        if not args.no_pg:
            name = f"audit_job_bench_{uuid.uuid4().hex[:8]}"
            try:
                asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
            except Exception as exc:
                print(f"postgresql: skipped ({type(exc).__name__}: {exc})")
            else:
                try:
                    base = (
                        pg_admin_dsn()
                        .rsplit("/", 1)[0]
                        .replace("postgresql://", "postgresql+asyncpg://", 1)
                    )
                    results += import_into("postgresql", f"{base}/{name}", csv_path)
                finally:
                    asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    print()
    print(f"{'what':<34} {'wall s':>7} {'peak RSS MB':>12} {'maxrss MB':>10} {'exit':>4}  output")
    for r in results:
        summary = r.output.strip().splitlines()[-1] if r.output.strip() else ""
        print(
            f"{r.label:<34} {r.seconds:>7.1f} {r.sampled_peak_mb:>12.1f} {r.maxrss_mb:>10.1f} "
            f"{r.exit_code:>4}  {summary[:90]}"
        )
    return 0 if all(r.exit_code == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
