"""Running the Alembic migrations from inside the tool (`audit-job db upgrade|current`)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.store import schema


def _alembic_config() -> Config:
    cfg = Config()
    location = Path(str(resources.files("audit_job.migrations")))
    cfg.set_main_option("script_location", str(location))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


async def upgrade(engine: AsyncEngine, revision: str = "head") -> str | None:
    return await _with_connection(engine, lambda cfg: command.upgrade(cfg, revision))


async def downgrade(engine: AsyncEngine, revision: str) -> str | None:
    return await _with_connection(engine, lambda cfg: command.downgrade(cfg, revision))


current = schema.current_revision


async def _with_connection(engine: AsyncEngine, action) -> str | None:  # type: ignore[no-untyped-def]
    cfg = _alembic_config()

    def run(connection: Connection) -> str | None:
        cfg.attributes["connection"] = connection
        action(cfg)
        return schema.read_revision(connection)

    async with engine.begin() as conn:
        return await conn.run_sync(run)
