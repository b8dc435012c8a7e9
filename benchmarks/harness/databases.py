"""Scratch databases: SQLite files in the run's folder, PostgreSQL databases made and dropped
(AUDIT_JOB_BENCH_PG_ADMIN, default postgresql://postgres@127.0.0.1:5432/test)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path
from typing import Any


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
