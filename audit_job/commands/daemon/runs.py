"""The leader's work at a slot: resume first, then the slot's run, then prune.

    work(epoch, slot) ── an interrupted or dead run? ──> resume it to its end first
                      ── still leading? ──> the slot's run (`scheduled_for` = slot)
                      ── [retention] keep_days ──> prune

Every run is an ordinary `commands.run` run with the epoch and its fence, so each of its
writes checks that this node still leads. A slot whose run cannot start still gets its
row: `skipped_overlap` when another run is live, `missed` when it failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_job.commands.daemon import remediation
from audit_job.commands.daemon.rows import SlotRow, SlotRows
from audit_job.commands.prune import prune_with_events
from audit_job.commands.run import RunRequest, RunSummary, execute
from audit_job.config import LoadedConfig
from audit_job.errors import AuditJobError, FencedOut, RunConflict
from audit_job.metrics import DaemonMetrics
from audit_job.models import RunStatus, RunTrigger
from audit_job.store import leader as lease_store
from audit_job.store import runs as run_store
from audit_job.store.engine import describe_db_error
from audit_job.store.types import utcnow

log = logging.getLogger("audit_job.commands.daemon")


class Runner:
    def __init__(
        self,
        config: Callable[[], LoadedConfig],
        metrics: DaemonMetrics,
        rows: SlotRows,
        holds: Callable[[int], bool],
        fenced_out: Callable[[], None],
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        *,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.spawn = spawn  # work beside the schedule (evidence bundles), cancelled at stop
        self.metrics = metrics
        self.rows = rows
        self.holds = holds  # does this node still lead in this epoch (and not stopping)?
        self.fenced_out = fenced_out
        self.on_commit = on_commit  # wakes the leader's deliverer (it delivers, not the run)
        self.engine: AsyncEngine | None = None
        self.task: asyncio.Task[RunSummary] | None = None  # the run going on, if any
        self._stop: asyncio.Event | None = None

    def interrupt(self) -> None:
        """SIGTERM: the run stops at its next batch, resumable."""
        if self._stop is not None:
            self._stop.set()

    def cancel(self) -> None:
        """Leadership lost: the run stops at once (its writes would be refused anyway)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def work(self, epoch: int, slot: datetime | None, token: int) -> None:
        """Resume first (an interrupted or dead run), then the slot's run (none when
        `slot` is None). Rows held back under `token` are released once the slot has
        its row."""
        settings = self.config().settings
        fence = self._fence(epoch)
        if settings.schedule.resume_interrupted and self.holds(epoch):
            try:
                run_id = await self._resumable()
            except Exception as exc:
                # Not known whether a run waits to be resumed: starting a new one could
                # leave it behind for good, so this slot is missed.
                reason = describe_db_error(exc)
                log.error(
                    "looking for a run to resume failed: %s",
                    reason,
                    extra={"event": "resume_first"},
                )
                if slot is not None:
                    await self._missed(epoch, slot, token, f"the run could not start: {reason}")
                return
            if run_id is not None:
                log.info("resuming run %d first", run_id, extra={"event": "resume_first"})
                await self._run(
                    epoch,
                    self._request(resume_run_id=run_id, epoch=epoch, fence=fence),
                )
        if slot is not None and self.holds(epoch):
            if settings.discovery.sync_before_run:
                await remediation.sync_first(self.config())
            request = self._request(scheduled_for=slot, epoch=epoch, fence=fence)
            await self._run(epoch, request, slot, token)
            if settings.remediation.auto and self.holds(epoch):
                await remediation.kick_after(self.config(), self.metrics)
        if settings.retention.keep_days and self.holds(epoch):
            await self._prune(settings.retention.keep_days)

    def _request(self, **fields: Any) -> RunRequest:
        return RunRequest(
            trigger=RunTrigger.SCHEDULE, deliver=False, on_commit=self.on_commit, **fields
        )

    def _fence(self, epoch: int) -> run_store.Fence:
        """The epoch check of every write of this epoch's runs, logging refusals."""

        async def fence(conn: AsyncConnection) -> None:
            try:
                await lease_store.check_fence(conn, epoch)
            except FencedOut as exc:
                log.warning("write refused: %s", exc, extra={"event": "fenced_out"})
                raise

        return fence

    async def _resumable(self) -> int | None:
        """The latest real run, when it is interrupted or dead (liveness rule)."""
        assert self.engine is not None
        async with self.engine.connect() as conn:
            run_id = await run_store.latest_run_id(conn)
            run = await run_store.get_run(conn, run_id) if run_id is not None else None
        if run is None:
            return None
        dead = run.is_dead(utcnow(), self.config().settings.audit.dead_after_seconds)
        return run.id if run.status == RunStatus.INTERRUPTED or dead else None

    async def _run(
        self,
        epoch: int,
        request: RunRequest,
        slot: datetime | None = None,
        token: int | None = None,
    ) -> None:
        def on_start(handle: Any) -> None:  # the run's row exists from here on
            self.metrics.run_started(handle)
            if slot is not None and token is not None:
                self.rows.release(epoch, token, slot)

        stop = asyncio.Event()
        self._stop = stop
        task = asyncio.create_task(execute(self.config(), request, stop, on_start=on_start))
        self.task = task
        started = time.monotonic()
        try:
            await asyncio.wait({task})
        finally:
            self.task = self._stop = None
        if task.cancelled():
            self.metrics.run_ended(None, None)
            log.warning(
                "run abandoned: this node stopped leading", extra={"event": "run_abandoned"}
            )
            return
        exc = task.exception()
        if exc is None:
            summary = task.result()
            self.metrics.run_ended(summary.status.value, summary.duration_seconds)
            self.spawn(self._bundle(summary.run_id))  # evidence: [evidence] dir
            return
        self.metrics.run_ended(None, time.monotonic() - started)
        if isinstance(exc, RunConflict) and slot is not None:
            # One row per slot all the same: skipped (another run is live) unless the
            # slot already has its row (then nothing is inserted).
            await self.rows.record(epoch, SlotRow(slot, RunStatus.SKIPPED_OVERLAP, str(exc)))
            if token is not None:
                self.rows.release(epoch, token, slot)
        elif isinstance(exc, FencedOut):
            log.warning("%s", exc, extra={"event": "fenced_out"})
            self.fenced_out()
        else:
            if isinstance(exc, AuditJobError):
                log.error("run failed: %s", exc, extra={"event": "run_error"})
            else:
                log.error("run failed: %r", exc, exc_info=exc, extra={"event": "run_error"})
            if slot is not None:
                # When the run could not even be created, the slot still gets its row.
                await self._missed(epoch, slot, token, f"the run could not start: {exc}")

    async def _missed(self, epoch: int, slot: datetime, token: int | None, message: str) -> None:
        await self.rows.record(epoch, SlotRow(slot, RunStatus.MISSED, message, (slot, slot, 1)))
        if token is not None:
            self.rows.release(epoch, token, slot)

    async def _bundle(self, run_id: int) -> None:
        """The run's evidence bundle, beside the schedule so a large one never holds the
        next slot (never raises; off unless `[evidence] dir` is set)."""
        from audit_job.commands.evidence import write_scheduled_bundle

        assert self.engine is not None
        await write_scheduled_bundle(self.config().settings, self.engine, run_id)

    async def _prune(self, keep_days: int) -> None:
        assert self.engine is not None
        try:
            result = await prune_with_events(self.engine, self.config().settings, keep_days)
        except Exception as exc:
            log.error("prune failed: %s", describe_db_error(exc), extra={"event": "prune"})
            return
        if result.checks:
            log.info("pruned %d checks of %d runs", result.checks, len(result.per_run))
        if result.events is not None and result.events.deleted:
            log.info("pruned %d delivered events", result.events.deleted)
