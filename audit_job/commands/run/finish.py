"""How a run ends: this worker's row released, the run's final status and message (owner
only), and the summary handed back; written under asyncio.shield by the caller."""

from __future__ import annotations

import logging
import time

from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.client import ClientStats
from audit_job.commands.run.types import RunSummary
from audit_job.errors import FencedOut, StoreUnavailable
from audit_job.models import RunStatus
from audit_job.pipeline import End
from audit_job.progress_counters import Progress
from audit_job.store import evidence as evidence_store
from audit_job.store import runs as store
from audit_job.store import workers as worker_store

log = logging.getLogger(__name__)


async def finish(
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
    """Record how this worker's share ended: its worker row goes, and the owner closes the
    run with its final status; a fenced or store-failed end raises instead."""
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
        status, message = final_status(end, error, counts, run_id, resume_hint)
        if owner and status is not None:
            counts = await store.finish_run(conn, run_id, status, message, counts)
            await evidence_store.seal_run(conn, run_id)  # evidence: the chain's next link
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


def final_status(
    end: End, error: BaseException | None, counts: dict[str, int], run_id: int, hint: str
) -> tuple[RunStatus | None, str | None]:
    """The run's status and message for how the pipeline ended and what is still pending."""
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
