"""Checks of the `[[policy]]` blocks against the targets: a pattern that matches no target
is most likely a typo (a warning at `config show` and at the start of a run, not an
error: the targets may come later)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.commands.database import open_database
from audit_job.config import PolicySettings, Settings
from audit_job.errors import AuditJobError
from audit_job.policy import is_glob, label
from audit_job.store.tables import audit_target

SCAN_PAGE = 1000


def _like(pattern: str) -> str:
    """A LIKE pattern matching at least what the glob matches: its literal prefix."""
    prefix = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    return re.sub(r"([%_\\])", r"\\\1", prefix) + "%"


async def _matches_a_target(conn: AsyncConnection, column: str, pattern: str) -> bool:
    col = audit_target.c[column]
    if not is_glob(pattern):
        stmt = select(col).where(col == pattern).limit(1)
        return (await conn.execute(stmt)).first() is not None
    regex = re.compile(fnmatch.translate(pattern))
    after: str | None = None
    while True:  # LIKE narrows (case-insensitively on SQLite), the glob decides
        stmt = select(col).where(col.like(_like(pattern), escape="\\")).distinct()
        if after is not None:
            stmt = stmt.where(col > after)
        values = [row[0] for row in await conn.execute(stmt.order_by(col).limit(SCAN_PAGE))]
        if any(regex.match(value) for value in values):
            return True
        if len(values) < SCAN_PAGE:
            return False
        after = values[-1]


async def unmatched_patterns(
    conn: AsyncConnection, policies: Sequence[PolicySettings], origin: str
) -> list[str]:
    """One warning per pattern that matches no target's app id or user id."""
    warnings = []
    for index, policy in enumerate(policies):
        for key, column, patterns in (
            ("apps", "app_id", policy.app_patterns),
            ("users", "user_id", policy.user_patterns),
        ):
            for pattern in patterns:
                if not await _matches_a_target(conn, column, pattern):
                    warnings.append(
                        f"{origin}: [[policy]] {label(policy, index)} {key}: {pattern!r} "
                        "matches no target"
                    )
    return warnings


def _no_sqlite_file(database_url: str) -> bool:
    url = make_url(database_url)
    return url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file()


async def warnings_for(settings: Settings, origin: str) -> list[str]:
    """The patterns of `[[policy]]` that match no target, when the database can be asked
    (no database yet, or targets from `[source] query`: nothing to check against)."""
    if not settings.policy or settings.source.query:
        return []
    if _no_sqlite_file(settings.database.url):
        return []  # no database yet (and `config show` must not create one)
    try:
        async with open_database(settings) as engine, engine.connect() as conn:
            return await unmatched_patterns(conn, settings.policy, origin)
    except (AuditJobError, SQLAlchemyError, OSError):
        return []
