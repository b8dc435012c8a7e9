"""The audit run: snapshot the pairs, work through them, record how it ended.

Liveness rule (also used by the daemon): a `running` run is dead when its heartbeat is
older than `[audit] dead_after_seconds` (default 30 s; the owner beats every
`heartbeat_seconds`, default 5 s), or at once when its owner was a process on this host
that no longer exists. A new run refuses to start while a live one exists; a dead one is
marked `interrupted` and can be resumed with `audit-job run --resume ID`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job import logs
from audit_job.client import AuthingClient, ClientStats
from audit_job.commands.database import open_database
from audit_job.commands.run.snapshot import SNAPSHOT_PARTS, plan, take_snapshot
from audit_job.commands.run.types import RunHandle, RunRequest, RunSummary
from audit_job.config import LoadedConfig, Settings
from audit_job.errors import (
    ApiError,
    ConfigError,
    FencedOut,
    NotFound,
    RunConflict,
    StoreUnavailable,
)
from audit_job.limiter import AdaptiveRateLimiter
from audit_job.models import RunStatus
from audit_job.pipeline import End, Pipeline, PipelineSettings
from audit_job.progress_counters import Progress
from audit_job.store import runs as store
from audit_job.store import workers as worker_store
from audit_job.store.types import utcnow

log = logging.getLogger(__name__)
__all__ = ["SNAPSHOT_PARTS", "RunHandle", "RunRequest", "RunSummary", "execute", "plan"]
RESUMABLE = {RunStatus.RUNNING, RunStatus.INTERRUPTED, RunStatus.FAILED}


def _filters(request: RunRequest) -> dict[str, Any]:
    return {k: v for k, v in (("app", request.app_id), ("user", request.user_id)) if v}


async def execute(
    loaded: LoadedConfig,
    request: RunRequest,
    stop: asyncio.Event,
    *,
    on_start: Callable[[RunHandle], None] | None = None,
) -> RunSummary:
    """Run (or resume, or join) an audit to its end; never raises for per-pair errors."""
    settings = loaded.settings
    key_id, secret = loaded.require_credentials()
    logs.register_secret(secret)
    async with open_database(settings, pool_size=4) as engine:
        notices: list[str] = []
        if request.join_run_id is not None:
            run_id = await _join(engine, request.join_run_id, settings)
        elif request.resume_run_id is not None:
            run_id = await _resume(
                engine, request.resume_run_id, settings, request.epoch, request.fence
            )
        else:
            run_id = await _create(engine, request, settings, notices)
        token = logs.current_run_id.set(run_id)
        try:
            return await _drive(
                engine, loaded, request, run_id, stop, notices, on_start, key_id, secret
            )
        finally:
            logs.current_run_id.reset(token)


async def _create(
    engine: AsyncEngine, request: RunRequest, settings: Settings, notices: list[str]
) -> int:
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
    await take_snapshot(engine, run_id, settings, request.app_id, request.user_id)
    return run_id


async def _resume(
    engine: AsyncEngine,
    run_id: int,
    settings: Settings,
    epoch: int | None,
    fence: store.Fence | None = None,
) -> int:
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


async def _join(engine: AsyncEngine, run_id: int, settings: Settings) -> int:
    if engine.dialect.name == "sqlite":
        raise ConfigError(
            "audit-job worker needs PostgreSQL: SQLite has one writer, so a run there has "
            "one worker (set [database] url to postgresql+asyncpg://...)"
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


async def _drive(
    engine: AsyncEngine,
    loaded: LoadedConfig,
    request: RunRequest,
    run_id: int,
    stop: asyncio.Event,
    notices: list[str],
    on_start: Callable[[RunHandle], None] | None,
    key_id: str,
    secret: str,
) -> RunSummary:
    settings = loaded.settings
    audit = settings.audit
    owner = request.join_run_id is None
    worker_id = uuid.uuid4().hex[:16]
    async with engine.begin() as conn:
        await worker_store.register_worker(conn, worker_id, run_id, audit.concurrency)
        counts = await store.status_counts(conn, run_id)
    progress = Progress(
        total=sum(counts.values()), done_before=sum(counts.values()) - counts["pending"]
    )
    limiter = AdaptiveRateLimiter.for_run(audit.rate_per_second)
    stats = ClientStats()
    if on_start is not None:
        on_start(RunHandle(run_id, progress, stats, limiter))
    pipeline_settings = PipelineSettings(
        concurrency=audit.concurrency,
        batch_size=audit.batch_size,
        claim_size=min(max(2 * audit.concurrency, int(audit.rate_per_second * 0.5)), 2000),
        heartbeat_seconds=audit.heartbeat_seconds,
        dead_after_seconds=audit.dead_after_seconds,
        write_retry_seconds=settings.database.write_retry_seconds,
        stall_timeout_seconds=audit.stall_timeout_seconds,
        stop_grace_seconds=min(settings.authing.timeout_seconds, 8.0),
    )

    def share_rate(live: int) -> None:
        # Workers of one run split the configured rate between them (scale-out).
        limiter.set_cap(audit.rate_per_second / max(1, live))

    end, error = End.API_FAILED, None
    try:
        client = AuthingClient(
            settings.authing,
            access_key_id=key_id,
            access_key_secret=secret,
            limiter=limiter,
            concurrency=audit.concurrency,
            max_attempts=audit.max_attempts,
            stats=stats,
        )
        async with client:
            pipeline = Pipeline(
                engine,
                run_id,
                worker_id,
                client.check,
                pipeline_settings,
                progress,
                owner=owner,
                fence=request.fence,
                on_live_workers=share_rate,
            )
            result = await pipeline.run(stop)
            end, error = result.end, result.error
    except ApiError as exc:  # token mode: credentials refused before any pair was asked
        end, error = End.API_FAILED, exc
    return await asyncio.shield(
        _finish(
            engine, run_id, worker_id, owner, end, error, progress, stats, notices, request.fence
        )
    )


async def _finish(
    engine: AsyncEngine,
    run_id: int,
    worker_id: str,
    owner: bool,
    end: End,
    error: BaseException | None,
    progress: Progress,
    stats: ClientStats,
    notices: list[str],
    fence: store.Fence | None = None,
) -> RunSummary:
    resume_hint = f"resume with: audit-job run --resume {run_id}"
    if end is End.FENCED:
        raise FencedOut(f"run {run_id}: this node is no longer the leader; it wrote nothing more")
    if end is End.STORE_FAILED:
        try:
            async with engine.begin() as conn:
                await store.mark_interrupted(conn, run_id, f"database unavailable: {error}")
                await worker_store.unregister_worker(conn, run_id, worker_id)
        except Exception:
            pass  # still away: the stale heartbeat marks the run dead, resumable all the same
        raise StoreUnavailable(f"run {run_id} stopped: {error}; {resume_hint}")
    async with engine.begin() as conn:
        if fence is not None:  # a newer leader owns the run now: leave its row alone
            await fence(conn)
        await worker_store.unregister_worker(conn, run_id, worker_id)
        counts = await store.status_counts(conn, run_id)
        status, message = _final_status(end, error, counts, run_id, resume_hint)
        if owner and status is not None:
            counts = await store.finish_run(conn, run_id, status, message, counts)
    duration = time.monotonic() - progress.started_at
    summary = RunSummary(
        run_id=run_id,
        status=status or RunStatus.RUNNING,
        counts=counts,
        duration_seconds=duration,
        checks_per_second=progress.answered / duration if duration > 0 else 0.0,
        retries=progress.retries,
        throttled=stats.throttled,
        latency_ms=dict(
            zip(("p50", "p95", "p99"), progress.percentiles_ms(0.50, 0.95, 0.99), strict=True)
        ),
        message=message,
        notices=notices,
    )
    log.info(
        "run %d ended %s: %s",
        run_id,
        summary.status,
        ", ".join(f"{k} {v}" for k, v in counts.items()),
        extra={"event": "run_finished"},
    )
    return summary


def _final_status(
    end: End, error: BaseException | None, counts: dict[str, int], run_id: int, hint: str
) -> tuple[RunStatus | None, str | None]:
    if end is End.API_FAILED:
        return RunStatus.FAILED, f"{error}; {hint} once fixed"
    if end is End.STOPPED:
        return (
            RunStatus.INTERRUPTED,
            f"stopped on request with {counts['pending']} pairs pending; {hint}",
        )
    if end is End.STALLED:
        return RunStatus.INTERRUPTED, f"no progress past the stall deadline; {hint}"
    if counts["pending"]:
        return RunStatus.INTERRUPTED, f"{counts['pending']} pairs still pending; {hint}"
    if counts["error"]:
        return RunStatus.COMPLETED_WITH_ERRORS, f"{counts['error']} pairs ended in error"
    return RunStatus.SUCCEEDED, None
