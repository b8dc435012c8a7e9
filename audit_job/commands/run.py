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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job import logs
from audit_job.client import AuthingClient, ClientStats
from audit_job.commands.database import open_database
from audit_job.commands.targets import validate_id
from audit_job.config import LoadedConfig, Settings
from audit_job.errors import (
    ApiError,
    ConfigError,
    FencedOut,
    NotFound,
    RunConflict,
    StoreError,
    StoreUnavailable,
)
from audit_job.limiter import AdaptiveRateLimiter
from audit_job.models import RunStatus, RunTrigger
from audit_job.pipeline import End, Pipeline, PipelineSettings, Progress
from audit_job.store import runs as store
from audit_job.store import targets as target_store
from audit_job.store.engine import describe_db_error, opened
from audit_job.store.types import utcnow

log = logging.getLogger(__name__)
RESUMABLE = {RunStatus.RUNNING, RunStatus.INTERRUPTED, RunStatus.FAILED}
SOURCE_BATCH = 2000
SNAPSHOT_PARTS = 2  # PostgreSQL connections taking a snapshot; a power of two


@dataclass
class RunRequest:
    trigger: RunTrigger = RunTrigger.MANUAL
    app_id: str | None = None
    user_id: str | None = None
    resume_run_id: int | None = None
    join_run_id: int | None = None  # scale-out: help with a live run's pending rows
    scheduled_for: datetime | None = None
    epoch: int | None = None
    fence: store.Fence | None = None


@dataclass
class RunSummary:
    run_id: int
    status: RunStatus
    counts: dict[str, int]
    duration_seconds: float
    checks_per_second: float
    retries: int
    throttled: int
    latency_ms: dict[str, int | None]
    message: str | None = None
    notices: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class RunHandle:
    """What a caller can watch while the run goes (progress bar, metrics)."""

    run_id: int
    progress: Progress
    stats: ClientStats
    limiter: AdaptiveRateLimiter


def _filters(request: RunRequest) -> dict[str, Any]:
    return {k: v for k, v in (("app", request.app_id), ("user", request.user_id)) if v}


async def plan(loaded: LoadedConfig, app_id: str | None, user_id: str | None) -> dict[str, Any]:
    """`run --dry-run`: how many pairs a run would check, and the first few."""
    settings = loaded.settings
    if settings.source.query:
        count, sample = 0, []
        async for app, user in _source_pairs(settings, app_id, user_id):
            count += 1
            if len(sample) < 10:
                sample.append({"app_id": app, "user_id": user})
        return {"pairs": count, "sample": sample, "source": "[source] query"}
    async with open_database(settings) as engine:
        async with engine.connect() as conn:
            count = await target_store.count(
                conn, enabled_only=True, app_id=app_id, user_id=user_id
            )
        sample = []
        async for row in target_store.stream(
            engine, app_id=app_id, user_id=user_id, enabled_only=True, batch=10
        ):
            sample.append({"app_id": row["app_id"], "user_id": row["user_id"]})
            if len(sample) >= 10:
                break
    return {"pairs": count, "sample": sample, "source": "audit_target (enabled)"}


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
    await _snapshot(engine, run_id, settings, request.app_id, request.user_id)
    return run_id


async def _snapshot(
    engine: AsyncEngine, run_id: int, settings: Settings, app_id: str | None, user_id: str | None
) -> None:
    started = time.monotonic()
    if settings.source.query:
        batch: list[tuple[str, str]] = []
        async for pair in _source_pairs(settings, app_id, user_id):
            batch.append(pair)
            if len(batch) >= SOURCE_BATCH:
                async with engine.begin() as conn:
                    await store.add_snapshot_rows(conn, run_id, batch)
                batch = []
        async with engine.begin() as conn:
            await store.add_snapshot_rows(conn, run_id, batch)
            total = await store.finish_snapshot(conn, run_id)
    else:
        # PostgreSQL: two connections insert disjoint halves at once (the server's index
        # and foreign-key work per row is the cost; 18.2 s -> 10.6 s for 1,000,000 pairs on
        # the 2-core bench host, 4 parts was slower there). Each half commits alone: a
        # process killed in between leaves snapshot_at unset, and the resume completes it.
        parts = 1
        if engine.dialect.name == "postgresql" and app_id is None and user_id is None:
            parts = SNAPSHOT_PARTS

        async def take(index: int) -> None:
            async with engine.begin() as conn:
                share = (index, parts) if parts > 1 else None
                await store.snapshot_targets(conn, run_id, app_id, user_id, share)

        await asyncio.gather(*(take(index) for index in range(parts)))
        async with engine.begin() as conn:
            total = await store.finish_snapshot(conn, run_id)
    log.info(
        "run %d: snapshot of %d pairs taken in %.1f s",
        run_id,
        total,
        time.monotonic() - started,
        extra={"event": "snapshot_taken"},
    )


async def _source_pairs(
    settings: Settings, app_id: str | None, user_id: str | None
) -> AsyncIterator[tuple[str, str]]:
    """Pairs from the operator's `[source] query`, streamed; bad rows skipped with a
    warning (the first few are named)."""
    source = settings.source
    url = source.url or settings.database.url
    skipped = 0
    async with opened(url) as src, src.connect() as conn:
        try:
            result = await conn.stream(text(source.query or ""))
        except Exception as exc:
            raise StoreError(f"[source] query failed: {describe_db_error(exc)}") from exc
        keys = list(result.keys())
        if len(keys) < 2:
            raise StoreError("[source] query must return two columns: app_id, user_id")
        app_at = keys.index("app_id") if "app_id" in keys else 0
        user_at = keys.index("user_id") if "user_id" in keys else 1
        number = 0
        async for row in result:
            number += 1
            app, user = row[app_at], row[user_at]
            app = "" if app is None else str(app)
            user = "" if user is None else str(user)
            problem = validate_id("app_id", app) or validate_id("user_id", user)
            if problem:
                skipped += 1
                if skipped <= 10:
                    log.warning("[source] query row %d skipped: %s", number, problem)
                continue
            if (app_id is None or app == app_id) and (user_id is None or user == user_id):
                yield app, user
    if skipped:
        log.warning("[source] query: %d rows skipped in all", skipped)


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
        await _snapshot(engine, run_id, settings, filters.get("app"), filters.get("user"))
    log.info("resuming run %d", run_id, extra={"event": "run_resumed"})
    return run_id


async def _join(engine: AsyncEngine, run_id: int, settings: Settings) -> int:
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
        await store.register_worker(conn, worker_id, run_id, audit.concurrency)
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
                await store.unregister_worker(conn, run_id, worker_id)
        except Exception:
            pass  # still away: the stale heartbeat marks the run dead, resumable all the same
        raise StoreUnavailable(f"run {run_id} stopped: {error}; {resume_hint}")
    async with engine.begin() as conn:
        if fence is not None:  # a newer leader owns the run now: leave its row alone
            await fence(conn)
        await store.unregister_worker(conn, run_id, worker_id)
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
