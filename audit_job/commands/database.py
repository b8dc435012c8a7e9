"""Opening the configured database for a command, with the schema checked."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.config import Settings
from audit_job.store import schema
from audit_job.store.engine import opened, wrap_store_error


@contextlib.asynccontextmanager
async def open_database(
    settings: Settings, *, require_schema: bool = True, pool_size: int = 5
) -> AsyncIterator[AsyncEngine]:
    async with opened(
        settings.database.url,
        connect_timeout_seconds=settings.database.connect_timeout_seconds,
        pool_size=pool_size,
    ) as engine:
        if require_schema:
            await schema.require_current(engine)
        try:
            yield engine
        except SQLAlchemyError as exc:
            # Translated where it enters: one line naming the database, never the SQL and
            # its bound parameters (a lost connection mid-import used to print 2,000 rows).
            raise wrap_store_error(exc, settings.database.url) from exc
