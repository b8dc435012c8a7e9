"""`audit-job violations`: pairs whose answers contradicted their expected state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from audit_job.commands.database import open_database
from audit_job.commands.report import parse_time
from audit_job.config import Settings
from audit_job.errors import ConfigError
from audit_job.policy import SEVERITY_VALUES
from audit_job.store import violation_reads
from audit_job.store import violations as store

COLUMNS = store.VIOLATION_COLUMNS


def check_severity(severity: str | None) -> str | None:
    if severity is not None and severity not in SEVERITY_VALUES:
        raise ConfigError(f"--severity: one of {', '.join(SEVERITY_VALUES)}; got {severity!r}")
    return severity


async def listing(
    settings: Settings,
    *,
    open_only: bool = False,
    app_id: str | None = None,
    severity: str | None = None,
    since: str | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Newest first; `severity` is a floor (warning: warning and critical)."""
    check_severity(severity)
    opened_since = parse_time(since, option="--since") if since else None
    async with open_database(settings) as engine:
        async for row in violation_reads.stream(
            engine,
            open_only=open_only,
            app_id=app_id,
            min_severity=severity,
            since=opened_since,
        ):
            yield row
