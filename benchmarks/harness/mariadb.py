"""Scratch MariaDB databases (AUDIT_JOB_BENCH_MARIADB, default root@127.0.0.1:3306), made
and dropped by the scenarios that compare MariaDB with PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid


def server() -> str:
    return os.environ.get("AUDIT_JOB_BENCH_MARIADB", "root@127.0.0.1:3306")


async def _execute(statement: str) -> None:
    import asyncmy

    user, _, address = server().rpartition("@")
    host, _, port = address.partition(":")
    conn = await asyncmy.connect(host=host, port=int(port or 3306), user=user or "root")
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(statement)
    finally:
        conn.close()


def mariadb_reachable() -> bool:
    try:
        asyncio.run(_execute("SELECT 1"))
    except Exception as exc:
        print(f"mariadb: not reachable ({type(exc).__name__}: {exc}); skipped", flush=True)
        return False
    return True


def create() -> tuple[str, str]:
    """(name, SQLAlchemy URL) of a new empty database."""
    name = f"audit_job_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_execute(f"CREATE DATABASE {name}"))
    return name, f"mysql+asyncmy://{server()}/{name}"


def drop(name: str) -> None:
    asyncio.run(_execute(f"DROP DATABASE IF EXISTS {name}"))
