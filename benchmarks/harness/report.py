"""What a run found: figures per scenario, targets with PASS/FAIL, printed as they come and
written to benchmarks/results/latest.json."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.processes import CLIENT_CORE, HERE, ROOT, SERVER_CORE

RESULTS = HERE / "results" / "latest.json"


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

    def print_summary(self, seconds: float, label: str = "") -> None:
        heading(f"summary ({seconds:.0f} s; {RESULTS.relative_to(ROOT)}){label}")
        for t in self.targets:
            status = "PASS" if t.ok else "FAIL"
            print(f"  [{status}] {t.scenario}: {t.what}: {t.value:,.3g} (target {t.goal})")
        failed = sum(not t.ok for t in self.targets)
        print(f"  {len(self.targets) - failed} of {len(self.targets)} targets met")


def heading(text: str) -> None:
    print(f"\n== {text}", flush=True)
