"""audit-job as the scenarios drive it: its targets, its config file, its commands and runs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from baselines import KEY_ID, SECRET, pair_at

from harness.processes import BASELINES, CLIENT_CORE, PY, Child, base_env, run_child

# The minimal loop's and the SDK's concurrency; audit-job runs on its default ("auto") unless
# a scenario pins it.
CONCURRENCY = 64


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
    settings = {"concurrency": '"auto"', "rate_per_second": 1_000_000, **audit}
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
