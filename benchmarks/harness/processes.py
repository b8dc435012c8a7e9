"""Child processes: the stand-in on one core, every client on the other, each measured."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent  # benchmarks/
ROOT = HERE.parent
PY = sys.executable
BASELINES = str(HERE / "baselines.py")
STANDIN = str(HERE / "standin.py")


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
