"""How a run begins: create a new one, resume an unfinished one, or join a live one.

Liveness rule (also used by the daemon): a `running` run is dead when its heartbeat is
older than `[audit] dead_after_seconds` (default 30 s; the owner beats every
`heartbeat_seconds`, default 5 s), or at once when its owner was a process on this host
that no longer exists. A new run refuses to start while a live one exists; a dead one is
marked `interrupted` and can be resumed with `audit-job run --resume ID`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.commands.run.snapshot import take_snapshot
from audit_job.commands.run.types import RunRequest
from audit_job.config import Settings
from audit_job.errors import ConfigError, NotFound, RunConflict
from audit_job.models import RunStatus
from audit_job.store import evidence as evidence_store
from audit_job.store import runs as store
from audit_job.store.types import utcnow

log = logging.getLogger(__name__)
RESUMABLE = {RunStatus.RUNNING, RunStatus.INTERRUPTED, RunStatus.FAILED}


def _filters(request: RunRequest) -> dict[str, Any]:
    return {k: v for k, v in (("app", request.app_id), ("user", request.user_id)) if v}


async def create(
    engine: AsyncEngine, request: RunRequest, settings: Settings, notices: list[str]
) -> int:
    """A new run and its snapshot; a dead running run is marked interrupted first (and
    named in `notices`), a live one refuses."""
    now = utcnow()
    async with engine.begin() as conn:
        await store.lock_run_creation(conn)
        if request.fence is not None:  # a daemon that no longer leads starts nothing
            await request.fence(conn)
        for run in await store.running_runs(conn):
            if run.is_dead(now, settings.audit.dead_after_seconds):
                await store.mark_interrupted(
                    conn,
                    run.id,
                    f"owner {run.owner} died (no heartbeat since "
                    f"{run.heartbeat_at or run.started_at:%H:%M:%S}Z)",
                )
                notices.append(
                    f"run {run.id} had died (owner {run.owner}); it is marked interrupted, "
                    f"resume it with: audit-job run --resume {run.id}"
                )
                continue
            age = (now - (run.heartbeat_at or run.started_at)).total_seconds()
            raise RunConflict(
                f"run {run.id} is still running (owner {run.owner}, heartbeat {age:.0f} s ago); "
                f"wait for it, or help it with: audit-job worker --run {run.id}"
            )
        try:
            run_id = await store.create_run(
                conn,
                trigger=request.trigger.value,
                filters=_filters(request) or None,
                scheduled_for=request.scheduled_for,
                epoch=request.epoch,
            )
        except IntegrityError as exc:
            raise RunConflict(f"schedule slot {request.scheduled_for} already has a run") from exc
        await evidence_store.record_config(conn, run_id, settings)  # evidence: config digest
    await take_snapshot(engine, run_id, settings, request.app_id, request.user_id)
    return run_id


async def resume(
    engine: AsyncEngine,
    run_id: int,
    settings: Settings,
    epoch: int | None,
    fence: store.Fence | None = None,
) -> int:
    """Take over an unfinished run (interrupted, failed, or running with a dead owner) and
    complete its snapshot if that was cut short."""
    now = utcnow()
    async with engine.begin() as conn:
        await store.lock_run_creation(conn)
        if fence is not None:
            await fence(conn)
        run = await store.get_run(conn, run_id)
        if run is None:
            raise NotFound(f"no run {run_id}")
        status = RunStatus(run.status)
        if status not in RESUMABLE:
            raise RunConflict(f"run {run_id} has ended ({status}); nothing to resume")
        if status is RunStatus.RUNNING and not run.is_dead(now, settings.audit.dead_after_seconds):
            raise RunConflict(
                f"run {run_id} is still running (owner {run.owner}); help it with: "
                f"audit-job worker --run {run_id}"
            )
        for other in await store.running_runs(conn):
            if other.id != run_id and not other.is_dead(now, settings.audit.dead_after_seconds):
                raise RunConflict(f"run {other.id} is still running (owner {other.owner})")
        await store.take_over(conn, run_id, epoch)
    if run.snapshot_at is None:  # the snapshot itself was interrupted: complete it
        filters = json.loads(run.filters) if run.filters else {}
        await take_snapshot(engine, run_id, settings, filters.get("app"), filters.get("user"))
    log.info("resuming run %d", run_id, extra={"event": "run_resumed"})
    return run_id


async def join(engine: AsyncEngine, run_id: int, settings: Settings) -> int:
    """Help a live run with its pending rows (PostgreSQL: SQLite has one writer)."""
    if engine.dialect.name == "sqlite":
        raise ConfigError(
            "audit-job worker needs PostgreSQL or MariaDB/MySQL: SQLite has one writer, so a "
            "run there has one worker (set [database] url to postgresql+asyncpg://... or "
            "mysql+asyncmy://...)"
        )
    async with engine.connect() as conn:
        run = await store.get_run(conn, run_id)
    if run is None:
        raise NotFound(f"no run {run_id}")
    if run.status != RunStatus.RUNNING or run.is_dead(utcnow(), settings.audit.dead_after_seconds):
        raise RunConflict(
            f"run {run_id} is not live ({run.status}); "
            f"resume it with: audit-job run --resume {run_id}"
        )
    if run.snapshot_at is None:
        raise RunConflict(f"run {run_id} is still taking its snapshot; try again in a moment")
    return run_id
