"""Scale-out workers need a database server; on SQLite `worker` says so instead of joining."""

from __future__ import annotations

from pathlib import Path

from helpers import cli_env, run_cli


def test_worker_on_sqlite_is_refused_with_one_line(tmp_path: Path) -> None:
    env = cli_env(
        AUDIT_JOB_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/audit.db",
        AUTHING_ACCESS_KEY_ID="ak-demo",
        AUTHING_ACCESS_KEY_SECRET="sk-demo",
    )
    assert run_cli("db", "upgrade", cwd=tmp_path, env=env).returncode == 0
    joined = run_cli("worker", "--run", "1", "--no-progress", cwd=tmp_path, env=env)
    assert joined.returncode == 2
    assert joined.stderr.strip().splitlines() == [
        "audit-job worker needs PostgreSQL or MariaDB/MySQL: SQLite has one writer, so a run "
        "there has one worker (set [database] url to postgresql+asyncpg://... or "
        "mysql+asyncmy://...)"
    ]
