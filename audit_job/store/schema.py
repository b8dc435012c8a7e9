"""Is the database's schema the one this code needs? Answered without importing Alembic.

Every command that works on the data checks this first; Alembic (and Mako) add ~10 MB to a
process, which a million-pair run cannot spare under its 100 MB, so only `db upgrade` and
friends load them (store/migrate.py). A test keeps HEAD_REVISION equal to Alembic's head.
"""

from __future__ import annotations

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.errors import StoreError

HEAD_REVISION = "0012"
VERSION_TABLE = "alembic_version"


def read_revision(connection: Connection) -> str | None:
    """The revision stamped in the database, or None before the first upgrade."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(read_revision)


async def require_current(engine: AsyncEngine) -> None:
    """Refuse to work on a database whose schema is missing or older than this code."""
    revision = await current_revision(engine)
    if revision is None:
        raise StoreError("the database has no audit-job tables yet; run: audit-job db upgrade")
    if revision != HEAD_REVISION:
        raise StoreError(
            f"the database schema is at revision {revision}, this audit-job needs "
            f"{HEAD_REVISION}; run: audit-job db upgrade"
        )
