"""Retention: delete the checks of runs older than `keep_days`: on PostgreSQL by dropping
each run's partition, elsewhere in batches; and, through `prune_configured` (the command
and the daemon), the delivered events older than `[events] keep_days` (commands/events.py:
never one a configured sink still needs).

The audit_run rows stay (their totals are the long-term record and cost little);
session_state is never touched, and neither is the latest run nor a running one. Each
dropped partition and each batch is its own transaction, so a large prune never holds a
long lock and can be interrupted and run again. The daemon calls
`prune(engine, keep_days, dry_run)` on its schedule with `[retention] keep_days`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.commands.database import open_database
from audit_job.config import Settings
from audit_job.errors import ConfigError
from audit_job.store import evidence as evidence_store
from audit_job.store import retention
from audit_job.store.types import utcnow

if TYPE_CHECKING:
    from audit_job.commands.events import EventPrune

log = logging.getLogger(__name__)
PRUNE_BATCH = 5000


@dataclass
class PruneResult:
    cutoff: datetime
    dry_run: bool
    checks: int = 0  # deleted, or that would be with dry_run
    per_run: dict[int, int] = field(default_factory=dict)
    events: EventPrune | None = None  # the event feed's prune (prune_configured)

    @property
    def runs(self) -> list[int]:
        return sorted(self.per_run)


async def prune(
    engine: AsyncEngine,
    keep_days: int,
    dry_run: bool = False,
    *,
    batch: int = PRUNE_BATCH,
    now: datetime | None = None,
) -> PruneResult:
    # 0 is "keep only what is always kept": the latest run and any running one.
    if keep_days < 0:
        raise ConfigError(f"--keep-days: must be an integer >= 0, got {keep_days}")
    result = PruneResult(cutoff=(now or utcnow()) - timedelta(days=keep_days), dry_run=dry_run)
    async with engine.connect() as conn:
        candidates = await retention.prunable_runs(conn, result.cutoff)
    for run_id in candidates:
        removed = 0
        if dry_run:
            async with engine.connect() as conn:
                removed = await retention.count_checks(conn, run_id)
        else:
            async with engine.begin() as conn:  # PostgreSQL: the run's partition, at once
                dropped = await retention.drop_checks(conn, run_id)
                if dropped:
                    await evidence_store.mark_pruned(conn, run_id)
            removed = dropped or 0
            while dropped is None:
                async with engine.begin() as conn:
                    deleted = await retention.delete_checks_batch(conn, run_id, batch)
                    if deleted:  # the chain keeps the run's links, not its content
                        await evidence_store.mark_pruned(conn, run_id)
                removed += deleted
                if deleted < batch:
                    break
        if removed:
            result.per_run[run_id] = removed
            result.checks += removed
    log.info(
        "%s %d checks of %d runs started before %s",
        "would delete" if dry_run else "deleted",
        result.checks,
        len(result.per_run),
        result.cutoff.isoformat(),
        extra={"event": "prune_done"},
    )
    return result


async def prune_configured(settings: Settings, keep_days: int, dry_run: bool) -> PruneResult:
    async with open_database(settings) as engine:
        return await prune_with_events(engine, settings, keep_days, dry_run)


async def prune_with_events(
    engine: AsyncEngine, settings: Settings, keep_days: int, dry_run: bool = False
) -> PruneResult:
    """The checks (`keep_days`), then the delivered events (`[events] keep_days`)."""
    from audit_job.commands import events as event_service  # its sinks load only here

    result = await prune(engine, keep_days, dry_run)
    result.events = await event_service.prune(engine, settings, dry_run=dry_run)
    return result
