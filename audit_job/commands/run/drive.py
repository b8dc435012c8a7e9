"""Driving a run: register this worker, build its limiter (at the learned rate, learning.py),
client and pipeline from the settings, share the configured rate with the other workers,
and run to the end."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.client import AuthingClient, ClientStats
from audit_job.commands.run.finish import finish
from audit_job.commands.run.learning import Learner, keeping
from audit_job.commands.run.types import PacingSummary, RunHandle, RunRequest, RunSummary
from audit_job.config import LoadedConfig
from audit_job.errors import ApiError
from audit_job.limiter import AdaptiveRateLimiter
from audit_job.pipeline import End, Pipeline, PipelineSettings
from audit_job.policy import PolicySet
from audit_job.progress_counters import Progress
from audit_job.store import runs as store
from audit_job.store import violation_reads
from audit_job.store import workers as worker_store
from audit_job.store.results import Judging


async def drive(
    engine: AsyncEngine,
    loaded: LoadedConfig,
    request: RunRequest,
    run_id: int,
    stop: asyncio.Event,
    notices: list[str],
    on_start: Callable[[RunHandle], None] | None,
    key_id: str,
    secret: str,
    on_commit: Callable[[], None] | None = None,
) -> RunSummary:
    """Work through the run's pending rows as one worker (the owner, or one that joined)
    until they are done or the run must stop, then finish under asyncio.shield."""
    settings = loaded.settings
    audit = settings.audit
    owner = request.join_run_id is None
    worker_id = uuid.uuid4().hex[:16]
    async with engine.begin() as conn:
        await worker_store.register_worker(conn, worker_id, run_id, audit.workers)
        counts = await store.status_counts(conn, run_id)
        # None open now: none of this run's pairs can gain one but through its own answer.
        maybe_open = await violation_reads.any_open(conn)
        # A worker joining a live run starts with its share of the rate and of the cap.
        live = len(await worker_store.live_workers(conn, run_id, audit.dead_after_seconds))
    judging = Judging(
        PolicySet(settings.policy),
        own_source="source" if settings.source.query else "target",
        maybe_open=maybe_open,
    )
    progress = Progress(
        total=sum(counts.values()), done_before=sum(counts.values()) - counts["pending"]
    )
    workers = [max(1, live)]  # live workers of the run, as the last heartbeat saw them
    learner = Learner(settings.authing.host, key_id, audit.rate_per_second)
    learned = await learner.starting_rate(engine, audit, request.use_learned_rate)
    if learned is not None and owner:
        async with engine.begin() as conn:
            await store.note_learned_start(conn, run_id, learned)
    limiter = AdaptiveRateLimiter.converging(
        audit.rate_per_second / workers[0],
        initial_rate=None if learned is None else learned / workers[0],
    )
    stats = ClientStats()
    pipeline_settings = PipelineSettings(
        concurrency=audit.workers,
        batch_size=audit.batch_size,
        claim_size=min(max(2 * audit.workers, int(audit.rate_per_second * 0.5)), 2000),
        heartbeat_seconds=audit.heartbeat_seconds,
        dead_after_seconds=audit.dead_after_seconds,
        write_retry_seconds=settings.database.write_retry_seconds,
        stall_timeout_seconds=audit.stall_timeout_seconds,
        stop_grace_seconds=min(settings.authing.timeout_seconds, 8.0),
    )

    def share_rate(live: int) -> None:
        # Workers of one run split the configured rate between them (scale-out), and what
        # the server lets through with it.
        workers[0] = max(1, live)
        limiter.set_cap(audit.rate_per_second / workers[0], scale_rate=True)

    client = AuthingClient(
        settings.authing,
        access_key_id=key_id,
        access_key_secret=secret,
        limiter=limiter,
        concurrency=audit.pinned_concurrency,
        max_concurrency=audit.max_concurrency,
        max_attempts=audit.max_attempts,
        stats=stats,
    )
    end, error = End.API_FAILED, None
    try:
        if on_start is not None:
            on_start(RunHandle(run_id, progress, stats, limiter, client.pacing.gate, learned))
        async with client, keeping(learner, engine, limiter, progress, workers):
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
                judging=judging,
                on_commit=on_commit,
            )
            result = await pipeline.run(stop)
            end, error = result.end, result.error
    except ApiError as exc:  # token mode: credentials refused before any pair was asked
        end, error = End.API_FAILED, exc
    summary = await asyncio.shield(
        finish(
            engine, run_id, worker_id, owner, end, error, progress, stats, notices, request.fence
        )
    )
    summary.pacing = PacingSummary.of(audit, client.pacing.gate, limiter, learned)
    return summary
