"""Opening the configured database for a command, with the schema checked."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.config import Settings
from audit_job.store import migrate
from audit_job.store.engine import opened


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
            await migrate.require_current(engine)
        yield engine
