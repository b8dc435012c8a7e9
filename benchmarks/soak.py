"""Soak: one long `audit-job run` against a faulty emulator; memory must stay flat and the
rate steady.

Both run as real subprocesses (`audit-job emulator`, `audit-job run`), so the RSS sampled
(psutil, every 0.25 s) is the tool's alone; progress is read from the SQLite file every
second. Verdict: memory flat (mean RSS of the last third at most 25 % + 16 MiB above the
first third's), rate steady (no whole second of the middle below half the median), every
pair final, the cap never exceeded on average.

    python benchmarks/soak.py                      # 500,000 pairs at 2,500/s (~4 minutes)
    python benchmarks/soak.py --pairs 50000 --rate 2000 --json

`tests/reliability/test_soak.py` imports `soak()` for the short CI version.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

# No `busy` (apiCode 1000): it is a throttle by spec 7 and halves the adaptive rate each
# time, so a steady share of it measures the limiter's back-off, not the tool's steadiness.
FAULTS = {
    "--fault-5xx": "0.02",
    "--fault-reset": "0.01",
    "--fault-bad-json": "0.01",
    "--fault-html-502": "0.01",
    "--jitter-ms": "3",
}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "audit_job", *args]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AUDIT_JOB_", "AUTHING_"))}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)


def _seed(db_path: Path, pairs: int) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.executemany(
            "INSERT INTO audit_target (app_id, user_id, enabled, created_at) "
            "VALUES (?, ?, 1, '2024-01-01 00:00:00.000000')",
            ((f"app-{i % 50}", f"user-{i:08d}") for i in range(pairs)),
        )


def _answered(db_path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute(
                "SELECT count(*) FROM session_check WHERE status <> 'pending'"
            ).fetchone()
            return int(row[0])
    except sqlite3.Error:
        return -1


def soak(pairs: int, rate: float, workdir: Path, *, concurrency: int = 64) -> dict[str, Any]:
    """Run the soak in `workdir`; return samples and the verdict's inputs."""
    db_path = workdir / "soak.db"
    started: list[subprocess.Popen[bytes]] = []
    try:
        emulator = subprocess.Popen(
            _cli("emulator", "--port", "0", *[x for kv in FAULTS.items() for x in kv]),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_env(),
            start_new_session=True,
        )
        started.append(emulator)
        assert emulator.stdout is not None
        line = emulator.stdout.readline().decode()
        if not line.startswith("emulator listening on "):
            raise RuntimeError(f"emulator did not start: {line!r}")
        url = line.split()[-1]
        config = workdir / "soak.toml"
        config.write_text(
            f'[database]\nurl = "sqlite+aiosqlite:///{db_path}"\n'
            f'[authing]\nhost = "{url}"\naccess_key_id = "ak-demo"\n'
            'access_key_secret = "sk-demo"\ntimeout_seconds = 2\n'
            f"[audit]\nconcurrency = {concurrency}\nrate_per_second = {rate}\n"
            "max_attempts = 8\nbatch_size = 500\n",
            encoding="utf-8",
        )
        config.chmod(0o600)
        subprocess.run(
            _cli("--config", str(config), "db", "upgrade"), check=True, capture_output=True
        )
        _seed(db_path, pairs)
        log = (workdir / "run.log").open("wb")
        run = subprocess.Popen(
            _cli("--config", str(config), "run", "--no-progress"),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(),
            start_new_session=True,
        )
        started.append(run)
        log.close()
        process = psutil.Process(run.pid)
        rss: list[tuple[float, int]] = []
        progress: list[tuple[float, int]] = []
        t0 = time.monotonic()
        next_progress = t0
        while run.poll() is None:
            now = time.monotonic()
            try:
                rss.append((now - t0, process.memory_info().rss))
            except psutil.Error:
                break
            if now >= next_progress:
                progress.append((now - t0, _answered(db_path)))
                next_progress += 1.0
            time.sleep(0.25)
        code = run.wait(timeout=60)
        duration = time.monotonic() - t0
        final = _answered(db_path)
    finally:
        for proc in started:
            _stop(proc)
            if proc.stdout is not None:
                proc.stdout.close()
    return {
        "pairs": pairs,
        "rate_cap": rate,
        "exit_code": code,
        "answered": final,
        "duration_seconds": round(duration, 1),
        "rss": rss,
        "progress": progress,
        "log_tail": (workdir / "run.log").read_text(errors="replace")[-2000:],
    }


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    """Memory flat and rate steady, from the samples taken while checks were flowing."""
    progress = [(t, n) for t, n in result["progress"] if n >= 0]
    flowing = [t for t, n in progress if n > 0]
    start = flowing[0] if flowing else 0.0
    rss = [v for t, v in result["rss"] if t >= start]
    third = max(1, len(rss) // 3)
    first, last = statistics.mean(rss[:third]), statistics.mean(rss[-third:])
    per_second = [
        (n2 - n1) / (t2 - t1)
        for (t1, n1), (t2, n2) in itertools.pairwise(progress)
        if t1 >= start and t2 > t1
    ]
    middle = per_second[2:-2] if len(per_second) > 6 else per_second
    median = statistics.median(middle) if middle else 0.0
    checks = {
        "all_final": result["answered"] == result["pairs"] and result["exit_code"] in (0, 3),
        "memory_flat": last <= first * 1.25 + 16 * 2**20,
        "rate_steady": bool(middle) and min(middle) >= 0.5 * median,
        "rate_capped": median <= result["rate_cap"] * 1.05,
    }
    return {
        "rss_first_third_mib": round(first / 2**20, 1),
        "rss_last_third_mib": round(last / 2**20, 1),
        "median_checks_per_second": round(median, 1),
        "slowest_second": round(min(middle), 1) if middle else None,
        "checks": checks,
        "passed": all(checks.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=500_000)
    parser.add_argument("--rate", type=float, default=2500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="audit-job-soak-") as folder:
        result = soak(args.pairs, args.rate, Path(folder), concurrency=args.concurrency)
    outcome = verdict(result)
    if args.json:
        print(json.dumps({**outcome, "duration_seconds": result["duration_seconds"]}))
    else:
        print(
            f"soak: {result['pairs']} pairs in {result['duration_seconds']} s, "
            f"{outcome['median_checks_per_second']} checks/s median "
            f"(slowest second {outcome['slowest_second']}), RSS "
            f"{outcome['rss_first_third_mib']} -> {outcome['rss_last_third_mib']} MiB: "
            + ("PASS" if outcome["passed"] else f"FAIL {outcome['checks']}")
        )
    return 0 if outcome["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
