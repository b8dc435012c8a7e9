"""What a scenario is to the runner: a name, its place in a run, and one function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.databases import Databases
from harness.report import Report


@dataclass(frozen=True)
class Context:
    """What the runner hands every scenario."""

    report: Report
    dbs: Databases
    folder: Path  # scratch, removed at the end of the run
    quick: bool  # shrink the scenario: a smoke check, figures not comparable
    rounds: int | None  # --rounds, None when not given
    million_seconds: float | None  # --million-seconds, None when not given
    use_pg: bool  # PostgreSQL reachable and not turned off
    scale: float | None = None  # --scale (store_scale), None when not given


@dataclass(frozen=True)
class Scenario:
    name: str
    order: int  # scenarios run in ascending order
    run: Callable[[Context], None]
    # "optional": measured on PostgreSQL too when it is there; "required": skipped without it.
    postgres: Literal["no", "optional", "required"] = "no"
    # False: long, run only when named (`--only NAME`), never by a plain `make bench`.
    default: bool = True
