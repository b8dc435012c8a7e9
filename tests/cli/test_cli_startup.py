"""Start-up stays light: help loads no driver, ORM, HTTP or rendering library, and a small
query loads only what it uses. Each probe is a fresh interpreter calling the CLI's entry
point, then reading `sys.modules`; how fast that is belongs to benchmarks/, not here."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import typer
from helpers import cli_env, run_cli, write_config

from audit_job.cli import app

HEAVY = (
    "sqlalchemy",
    "aiohttp",
    "asyncpg",
    "aiosqlite",
    "rich",
    "pydantic",
    "alembic",
    "apscheduler",
    "prometheus_client",
)
PROBE = """
import contextlib, io, json, sys
from audit_job.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "stdout": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def probe(*args: str) -> dict[str, object]:
    """Run the CLI with `args` in a new interpreter; its exit code, output and modules."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def heavy_in(modules: object) -> set[str]:
    assert isinstance(modules, list)
    return {name.split(".")[0] for name in modules} & set(HEAVY)


def command_paths(group: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and command group under `group` (a click group), as argv words."""
    paths = []
    for name, command in getattr(group, "commands", {}).items():
        path = (*prefix, name)
        paths += [path, *command_paths(command, path)]
    return paths


def test_help_of_the_cli_and_of_every_command_loads_no_heavy_library() -> None:
    root = typer.main.get_command(app)
    invocations = [("--help",), *((*path, "--help") for path in command_paths(root))]
    assert ("run", "--help") in invocations and ("targets", "import", "--help") in invocations
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda args: probe(*args), invocations))
    for args, result in zip(invocations, results, strict=True):
        assert result["code"] == 0, args
        assert "Usage: audit-job" in str(result["stdout"]), (args, result["stdout"])
        assert heavy_in(result["modules"]) == set(), args


def test_listing_runs_loads_only_the_database_path(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "audit-job.toml",
        {"database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"}},
    )
    upgraded = run_cli("--config", str(config), "db", "upgrade", env=cli_env())
    assert upgraded.returncode == 0, upgraded.stderr
    result = probe("--config", str(config), "runs", "--limit", "1", "--format", "csv")
    assert result["code"] == 0
    assert str(result["stdout"]).startswith("id,trigger,status,")
    modules = set(result["modules"])  # type: ignore[arg-type]
    assert {"sqlalchemy", "aiosqlite", "pydantic"} <= heavy_in(result["modules"])
    assert heavy_in(result["modules"]) & {"aiohttp", "rich", "alembic", "asyncpg"} == set()
    assert heavy_in(result["modules"]) & {"apscheduler", "prometheus_client"} == set()
    # The emulator's options name the defaults of `audit-job emulator`; its server stays out.
    assert {
        "audit_job.emulator.server",
        "audit_job.client",
        "audit_job.pipeline",
    } & modules == set()
