"""`audit-job daemon`: scheduled audits, one fenced leader, every slot accounted for.

    lease loop (every lease/3) ──> leader? ── gained: interrupt runs of older epochs,
                                   │          record missed slots (one row), resume, catch up
                                   └── lost (or any error): not leader, cancel the run
    AsyncIOScheduler ── fire(slot) ──> not leader: nothing (the leader records the slot)
                                       busy: `skipped_overlap` row
                                       else: resume first, then the slot's run
                     ── max instances / misfire / coalesced gap ──> skipped / missed row

Every slot ends as exactly one `audit_run` row (unique `scheduled_for`): its run, a
`skipped_overlap` row or a `missed` row. Interval slots are anchored at 2000-01-01 UTC,
so every node computes the same slot times. Runs carry the leader's epoch and every
write checks it (store/leader.py), so a node that froze and woke after a takeover writes
nothing more. On SQLite a lock file next to the database excludes a second daemon.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_job import health
from audit_job.commands.prune import prune
from audit_job.commands.run import RunRequest, RunSummary, execute
from audit_job.config import LoadedConfig, ScheduleSettings
from audit_job.errors import AuditJobError, FencedOut, RunConflict, StoreError
from audit_job.metrics import DaemonMetrics
from audit_job.models import RunStatus, RunTrigger
from audit_job.store import leader as lease_store
from audit_job.store import runs as run_store
from audit_job.store import schema
from audit_job.store.engine import create_engine, describe_db_error
from audit_job.store.types import utcnow

log = logging.getLogger(__name__)
JOB_ID = "audit"
ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)
STOP_GRACE_SECONDS = 12.0  # SIGTERM: the run's own stop, then cancel; exit within ~15 s
MAX_SLOT_SCAN = 100_000


def make_trigger(schedule: ScheduleSettings) -> BaseTrigger:
    zone = ZoneInfo(schedule.timezone)
    if schedule.interval_seconds is not None:
        return IntervalTrigger(seconds=schedule.interval_seconds, start_date=ANCHOR, timezone=zone)
    return CronTrigger.from_crontab(schedule.cron, timezone=zone)


def norm(slot: datetime) -> datetime:
    """A slot as stored: UTC, whole milliseconds (float rounding must not split a slot)."""
    return datetime.fromtimestamp(round(slot.timestamp(), 3), UTC)


Gap = tuple[datetime, datetime, int]  # (first, last, count) of consecutive slots


def slots_between(trigger: BaseTrigger, after: datetime, until: datetime) -> Gap | None:
    """(first, last, count) of the trigger's slots in (after, until], or None."""
    if isinstance(trigger, IntervalTrigger):
        step = trigger.interval_length

        def index(at: datetime) -> int:
            return math.floor((at - ANCHOR).total_seconds() / step + 1e-9)

        low, high = index(after), index(until)
        if high <= low:
            return None
        first = ANCHOR + timedelta(seconds=(low + 1) * step)
        return norm(first), norm(ANCHOR + timedelta(seconds=high * step)), high - low
    first = last = None
    count = 0
    at = trigger.get_next_fire_time(after, after)
    while at is not None and at <= until and count < MAX_SLOT_SCAN:
        first = first or at
        last, count = at, count + 1
        at = trigger.get_next_fire_time(at, at)
    return (norm(first), norm(last), count) if first and last else None


class Daemon:
    def __init__(
        self, loaded: LoadedConfig, reload: Callable[[], LoadedConfig] | None = None
    ) -> None:
        self.loaded = loaded
        self.reload_config = reload
        settings = loaded.settings
        name = settings.daemon.node_name or run_store.HOST
        self.node = f"{name}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.metrics = DaemonMetrics()
        self.stop = asyncio.Event()
        self.epoch: int | None = None
        self._valid_until = 0.0  # monotonic end of the lease as this node last renewed it
        self._busy: str | None = None
        self._gaining = False
        # Slots that fired while _on_gain was accounting: the ones after what it accounted
        # for are recorded when it is done (a slot firing during its commit was lost).
        self._held_back: list[tuple[datetime, RunStatus, Gap | None]] = []
        self._idle = asyncio.Event()  # set whenever _busy is None
        self._idle.set()
        self._run_task: asyncio.Task[RunSummary] | None = None
        self._run_stop: asyncio.Event | None = None
        self._gain_task: asyncio.Task[None] | None = None
        self._submitted: deque[datetime] = deque()
        self._last_seen: datetime = norm(utcnow())
        self._tasks: set[asyncio.Task[Any]] = set()
        self.db_error: str | None = "no leadership check yet"
        self.engine: AsyncEngine | None = None
        self.trigger = make_trigger(settings.schedule)
        self.scheduler = AsyncIOScheduler(timezone=ZoneInfo(settings.schedule.timezone))
        self._sqlite = make_url(settings.database.url).get_backend_name() == "sqlite"

    @property
    def lease_seconds(self) -> float:
        return self.loaded.settings.daemon.lease_seconds

    @property
    def is_leader(self) -> bool:
        return self.epoch is not None and time.monotonic() < self._valid_until

    # -- life --------------------------------------------------------------------------

    async def serve(self) -> None:
        settings = self.loaded.settings
        self.loaded.require_credentials()
        lock = None
        if self._sqlite:
            lock = lease_store.lock_sqlite_file(make_url(settings.database.url).database or "")
        logging.getLogger("apscheduler.scheduler").setLevel(logging.WARNING)
        self.engine = create_engine(
            settings.database.url,
            connect_timeout_seconds=min(settings.database.connect_timeout_seconds, 5),
            pool_size=2,
        )
        runner = None
        try:
            if settings.daemon.listen:
                runner = await health.start_listener(
                    settings.daemon.listen, self.health, self.scrape
                )
                log.info("listening on %s (/healthz, /metrics)", settings.daemon.listen)
            await self._wait_for_schema()
            if self.stop.is_set():
                return
            self._start_scheduler()
            lease = asyncio.create_task(self._lease_loop(), name="lease")
            await self.stop.wait()
            await self._shut_down(lease)
        finally:
            if runner is not None:
                await runner.cleanup()
            await self.engine.dispose()
            if lock is not None:
                lock.close()

    async def _wait_for_schema(self) -> None:
        """A database that is away at start is waited for (with backoff), not fatal;
        a database without our schema is (run `audit-job db upgrade`)."""
        assert self.engine is not None
        delay = 1.0
        while not self.stop.is_set():
            try:
                async with asyncio.timeout(10):
                    await schema.require_current(self.engine)
                return
            except StoreError as exc:
                if exc.__cause__ is None:
                    raise  # the schema is missing or old: retrying cannot help
                reason = str(exc)
            except (OSError, SQLAlchemyError, TimeoutError) as exc:
                reason = describe_db_error(exc)
            self.db_error = reason
            log.warning("database not reachable, retrying in %.0f s: %s", delay, reason)
            try:
                await asyncio.wait_for(self.stop.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, 30.0)

    def _start_scheduler(self) -> None:
        schedule = self.loaded.settings.schedule
        self.scheduler.add_listener(
            self._on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )
        self.scheduler.add_job(
            self._fire,
            self.trigger,
            id=JOB_ID,
            name="audit",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, math.ceil(schedule.grace_seconds)),
        )
        self._last_seen = norm(utcnow())  # earlier slots are _on_gain's to account for
        self.scheduler.start()
        log.info(
            "daemon %s started (%s, misfire grace %.0f s, lease %.0f s); next fire at %s",
            self.node,
            f"every {schedule.interval_seconds:g} s"
            if schedule.interval_seconds is not None
            else f"cron '{schedule.cron}' {schedule.timezone}",
            schedule.grace_seconds,
            self.lease_seconds,
            self._next_fire(),
            extra={"event": "daemon_started"},
        )

    def _next_fire(self) -> str:
        job = self.scheduler.get_job(JOB_ID)
        when = job.next_run_time if job is not None else None
        return when.isoformat() if when is not None else "never"

    async def _shut_down(self, lease: asyncio.Task[None]) -> None:
        log.info("stopping: interrupting the current run (resumable)", extra={"event": "stopping"})
        self.scheduler.pause()
        if self._run_stop is not None:
            self._run_stop.set()
        waiting = [t for t in (self._run_task, self._gain_task) if t is not None and not t.done()]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=STOP_GRACE_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self.scheduler.shutdown(wait=False)
        lease.cancel()
        await asyncio.gather(lease, return_exceptions=True)
        if self.epoch is not None and self.engine is not None:
            epoch, self.epoch = self.epoch, None
            try:
                async with asyncio.timeout(2):
                    async with self.engine.begin() as conn:
                        await lease_store.release(conn, self.node, epoch)
                log.info("leadership (epoch %d) released", epoch, extra={"event": "lease_released"})
            except Exception as exc:
                log.warning("could not release the lease (it expires by itself): %s", exc)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def reload(self) -> None:
        """SIGHUP: reload the file; schedule and run settings apply from the next fire.
        The database URL, listener, lease and node name need a restart."""
        if self.reload_config is None:
            return
        try:
            fresh = self.reload_config()
        except AuditJobError as exc:
            log.error("SIGHUP: configuration not reloaded: %s", exc, extra={"event": "reload"})
            return
        old = self.loaded.settings
        for section in ("database", "daemon"):
            if getattr(old, section) != getattr(fresh.settings, section):
                log.warning("SIGHUP: [%s] changes take effect after a restart", section)
        fresh = LoadedConfig(
            fresh.settings.model_copy(update={"database": old.database, "daemon": old.daemon}),
            fresh.origin,
            fresh.warnings,
        )
        self.loaded = fresh
        if fresh.settings.schedule != old.schedule:
            self.trigger = make_trigger(fresh.settings.schedule)
            self._last_seen = norm(utcnow())
            self.scheduler.modify_job(
                JOB_ID, misfire_grace_time=max(1, math.ceil(fresh.settings.schedule.grace_seconds))
            )
            self.scheduler.reschedule_job(JOB_ID, trigger=self.trigger)
        log.info(
            "SIGHUP: configuration reloaded from %s; next fire at %s",
            fresh.origin,
            self._next_fire(),
            extra={"event": "reload"},
        )

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- leadership --------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        every = self.lease_seconds / 3
        delay = every
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                async with asyncio.timeout(every):
                    epoch = await self._take_or_renew()
                self.db_error = None
                delay = every
            except Exception as exc:
                self.db_error = describe_db_error(exc) if str(exc) else type(exc).__name__
                log.warning(
                    "leadership check failed, so not leader (fail closed): %s",
                    self.db_error,
                    extra={"event": "lease_error"},
                )
                epoch = None
                delay = min(delay * 2, max(every, 30.0))
            if epoch is None:
                if self.epoch is not None:
                    self._step_down("the lease is lost" if self.db_error is None else "error")
            elif epoch != self.epoch:
                if self.epoch is not None:
                    self._step_down(f"epoch moved to {epoch}")
                self._gain(epoch, started)
            elif not self.is_leader:
                # Renewed, but only after the lease had lapsed locally: fires in the gap
                # were dropped, so account for them as after any takeover.
                self._step_down("the lease lapsed before it was renewed")
                self._gain(epoch, started)
            else:
                self._valid_until = started + self.lease_seconds
            try:
                await asyncio.wait_for(self.stop.wait(), max(0.05, delay))
            except TimeoutError:
                pass

    async def _take_or_renew(self) -> int | None:
        assert self.engine is not None
        async with self.engine.begin() as conn:
            return await lease_store.take_or_renew(
                conn, self.node, self.epoch, self.lease_seconds, force=self._sqlite
            )

    def _gain(self, epoch: int, started: float) -> None:
        self.epoch = epoch
        self._valid_until = started + self.lease_seconds
        self.metrics.leader, self.metrics.epoch = True, epoch
        self._gaining = True  # until _on_gain has accounted for the slots so far
        self._held_back = []
        log.info("leader now (epoch %d)", epoch, extra={"event": "leader_gained"})
        self._gain_task = self._spawn(self._on_gain(epoch))

    def _step_down(self, reason: str) -> None:
        log.warning(
            "not leader any more (%s); the current run stops without writing more",
            reason,
            extra={"event": "leader_lost"},
        )
        self.epoch = None
        self.metrics.leader = False
        for task in (self._run_task, self._gain_task):
            if task is not None and not task.done():
                task.cancel()

    def _holds(self, epoch: int) -> bool:
        return self.is_leader and self.epoch == epoch and not self.stop.is_set()

    async def _on_gain(self, epoch: int) -> None:
        """Account for what happened while nobody (or another node) led, then catch up."""
        assert self.engine is not None
        while self._busy and self._holds(epoch):  # the previous epoch's work is ending
            try:
                await asyncio.wait_for(self._idle.wait(), 0.5)
            except TimeoutError:
                pass
        if not self._holds(epoch):
            return
        self._busy = "catch-up"
        self._idle.clear()
        try:
            schedule = self.loaded.settings.schedule
            async with self.engine.begin() as conn:
                await run_store.lock_run_creation(conn)  # lock order as in run.py
                await lease_store.check_fence(conn, epoch)
                for run_id in await lease_store.interrupt_superseded(conn, epoch):
                    log.info("run %d of an older leader is marked interrupted", run_id)
                last = await lease_store.last_slot(conn)
                missed = slots_between(self.trigger, last, utcnow()) if last else None
                recorded = missed is not None and await lease_store.record_slot(
                    conn,
                    missed[1],
                    RunStatus.MISSED,
                    _missed_message(*missed),
                    epoch=epoch,
                    missed=missed,
                )
            self._gaining = False
            if recorded and missed is not None:
                self.metrics.missed_slots += missed[2]
                log.warning("%s", _missed_message(*missed), extra={"event": "slots_missed"})
            accounted = missed[1] if missed is not None else last
            held, self._held_back = self._held_back, []
            for slot, status, gap in held:
                if accounted is None or slot > accounted:
                    message = _missed_message(*gap) if gap else "taking over was still going"
                    await self._record(epoch, slot, status, message, gap)
            await self._work(epoch, None, catch_up=recorded and schedule.catch_up)
        except FencedOut as exc:
            log.warning("%s", exc, extra={"event": "fenced_out"})
        except Exception as exc:
            log.error("taking over failed: %s", describe_db_error(exc), extra={"event": "gain"})
        finally:
            if asyncio.current_task() is self._gain_task:  # not a newer takeover's flag
                self._gaining = False
            self._busy = None
            self._idle.set()

    # -- the schedule --------------------------------------------------------------------

    def _on_event(self, event: JobSubmissionEvent | JobExecutionEvent) -> None:
        if isinstance(event, JobExecutionEvent):  # missed: past the misfire grace time
            slot = norm(event.scheduled_run_time)
            if slot in self._submitted:
                self._submitted.remove(slot)
            self._account(slot, RunStatus.MISSED, (slot, slot, 1))
            return
        slot = norm(event.scheduled_run_times[-1])
        gap = slots_between(self.trigger, self._last_seen, slot - timedelta(milliseconds=1))
        self._last_seen = max(self._last_seen, slot)
        if gap is not None:  # coalesced away by the scheduler: still recorded
            self._account(gap[1], RunStatus.MISSED, gap)
        if event.code == EVENT_JOB_SUBMITTED:
            self._submitted.append(slot)
        else:
            self._account(slot, RunStatus.SKIPPED_OVERLAP, None)

    def _account(self, slot: datetime, status: RunStatus, missed: Gap | None) -> None:
        if self._gaining:
            self._held_back.append((slot, status, missed))
            return
        if self.is_leader and self.epoch is not None:
            message = (
                _missed_message(*missed)
                if missed
                else f"{self._busy or 'a run'} was still going at this slot"
            )
            self._spawn(self._record(self.epoch, slot, status, message, missed))

    async def _record(
        self,
        epoch: int,
        slot: datetime,
        status: RunStatus,
        message: str,
        missed: Gap | None,
    ) -> None:
        assert self.engine is not None
        try:
            async with self.engine.begin() as conn:
                await lease_store.check_fence(conn, epoch)
                done = await lease_store.record_slot(
                    conn, slot, status, message, epoch=epoch, missed=missed
                )
        except FencedOut as exc:
            log.warning("%s", exc, extra={"event": "fenced_out"})
            return
        except Exception as exc:
            log.error("slot %s not recorded: %s", slot.isoformat(), describe_db_error(exc))
            return
        if not done:
            return
        if status is RunStatus.SKIPPED_OVERLAP:
            self.metrics.skipped_slots += 1
            log.warning("slot %s skipped: %s", slot.isoformat(), message, extra={"event": status})
        else:
            self.metrics.missed_slots += missed[2] if missed else 1
            log.warning("slot %s: %s", slot.isoformat(), message, extra={"event": status})

    async def _fire(self) -> None:
        slot = self._submitted.popleft() if self._submitted else None
        if slot is not None and self._gaining:  # _on_gain accounts for it, or records it
            self._held_back.append((slot, RunStatus.SKIPPED_OVERLAP, None))
            return
        if slot is None or not self.is_leader or self.epoch is None:
            return  # a follower
        epoch = self.epoch
        if self._busy:
            await self._record(
                epoch,
                slot,
                RunStatus.SKIPPED_OVERLAP,
                f"{self._busy} was still going at this slot",
                None,
            )
            return
        self._busy = f"the run of slot {slot.isoformat()}"
        self._idle.clear()
        try:
            await self._work(epoch, slot)
        finally:
            self._busy = None
            self._idle.set()
            log.info("next fire at %s", self._next_fire(), extra={"event": "next_fire"})

    async def _work(self, epoch: int, slot: datetime | None, *, catch_up: bool = True) -> None:
        """Resume first (an interrupted or dead run), then the slot's run (or a catch-up
        run when `slot` is None and `catch_up`)."""
        settings = self.loaded.settings
        fence = self._fence(epoch)
        if settings.schedule.resume_interrupted and self._holds(epoch):
            run_id = await self._resumable()
            if run_id is not None:
                log.info("resuming run %d first", run_id, extra={"event": "resume_first"})
                await self._run(
                    RunRequest(
                        trigger=RunTrigger.SCHEDULE, resume_run_id=run_id, epoch=epoch, fence=fence
                    ),
                    None,
                )
        if (slot is not None or catch_up) and self._holds(epoch):
            request = RunRequest(
                trigger=RunTrigger.SCHEDULE, scheduled_for=slot, epoch=epoch, fence=fence
            )
            await self._run(request, slot)
        if settings.retention.keep_days and self._holds(epoch):
            await self._prune(settings.retention.keep_days)

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
        dead = run.is_dead(utcnow(), self.loaded.settings.audit.dead_after_seconds)
        return run.id if run.status == RunStatus.INTERRUPTED or dead else None

    async def _run(self, request: RunRequest, slot: datetime | None) -> None:
        stop = asyncio.Event()
        self._run_stop = stop
        task = asyncio.create_task(
            execute(self.loaded, request, stop, on_start=self.metrics.run_started)
        )
        self._run_task = task
        started = time.monotonic()
        try:
            await asyncio.wait({task})
        finally:
            self._run_task = self._run_stop = None
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
            self._spawn(self._bundle(summary.run_id))  # evidence: [evidence] dir
            return
        self.metrics.run_ended(None, time.monotonic() - started)
        if isinstance(exc, RunConflict) and slot is not None and self.epoch is not None:
            # One row per slot all the same: skipped (another run is live) unless the
            # slot already has its row (then nothing is inserted).
            await self._record(self.epoch, slot, RunStatus.SKIPPED_OVERLAP, str(exc), None)
        elif isinstance(exc, FencedOut):
            log.warning("%s", exc, extra={"event": "fenced_out"})
            self._step_down("fenced out")
        else:
            if isinstance(exc, AuditJobError):
                log.error("run failed: %s", exc, extra={"event": "run_error"})
            else:
                log.error("run failed: %r", exc, exc_info=exc, extra={"event": "run_error"})
            if slot is not None and self.epoch is not None:
                # When the run could not even be created, the slot still gets its row.
                message = f"the run could not start: {exc}"
                await self._record(self.epoch, slot, RunStatus.MISSED, message, (slot, slot, 1))

    async def _bundle(self, run_id: int) -> None:
        """The run's evidence bundle, beside the schedule (never raises; off unless
        `[evidence] dir` is set)."""
        from audit_job.commands.evidence import write_scheduled_bundle

        assert self.engine is not None
        await write_scheduled_bundle(self.loaded.settings, self.engine, run_id)

    async def _prune(self, keep_days: int) -> None:
        assert self.engine is not None
        try:
            result = await prune(self.engine, keep_days)
        except Exception as exc:
            log.error("prune failed: %s", describe_db_error(exc), extra={"event": "prune"})
            return
        if result.checks:
            log.info("pruned %d checks of %d runs", result.checks, len(result.per_run))

    # -- health and metrics ----------------------------------------------------------------

    async def health(self) -> tuple[bool, str]:
        if self.db_error is not None:
            return False, f"database: {self.db_error}"
        if not self.scheduler.running:
            return False, "scheduler not running"
        role = f"leader (epoch {self.epoch})" if self.is_leader else "follower"
        return True, f"ok: {role}, next fire at {self._next_fire()}"

    async def scrape(self) -> bytes:
        if self.engine is not None:
            try:
                async with asyncio.timeout(2), self.engine.connect() as conn:
                    oldest = await lease_store.oldest_checked_per_app(conn)
                now = utcnow()
                self.metrics.freshness = {
                    app: (now - at).total_seconds() for app, at in oldest.items() if at
                }
            except Exception as exc:
                log.debug("freshness not read: %s", exc)
        return self.metrics.render()


def _missed_message(first: datetime, last: datetime, count: int) -> str:
    return (
        f"{count} slot(s) missed from {first.isoformat()} to {last.isoformat()} "
        "(no leader running, or past the misfire grace time)"
    )
