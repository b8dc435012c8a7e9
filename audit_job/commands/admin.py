"""Database and configuration administration: db upgrade/current/downgrade, config show."""

from __future__ import annotations

from typing import Any

from audit_job.commands.database import open_database
from audit_job.config import LoadedConfig, masked
from audit_job.store import migrate
from audit_job.store.engine import display_url


async def db_upgrade(loaded: LoadedConfig, revision: str = "head") -> dict[str, Any]:
    async with open_database(loaded.settings, require_schema=False) as engine:
        before = await migrate.current(engine)
        after = await migrate.upgrade(engine, revision)
    return {"database": display_url(loaded.settings.database.url), "from": before, "to": after}


async def db_downgrade(loaded: LoadedConfig, revision: str) -> dict[str, Any]:
    async with open_database(loaded.settings, require_schema=False) as engine:
        before = await migrate.current(engine)
        after = await migrate.downgrade(engine, revision)
    return {"database": display_url(loaded.settings.database.url), "from": before, "to": after}


async def db_current(loaded: LoadedConfig) -> dict[str, Any]:
    async with open_database(loaded.settings, require_schema=False) as engine:
        revision = await migrate.current(engine)
    return {
        "database": display_url(loaded.settings.database.url),
        "current": revision,
        "head": migrate.head_revision(),
    }


def config_show(loaded: LoadedConfig) -> tuple[str, dict[str, Any]]:
    """Where the configuration came from, and its effective values with secrets masked."""
    return loaded.origin, masked(loaded.settings)
