"""`audit-job daemon`: scheduled audits, one fenced leader, every slot accounted for.

    Lease (every lease/3) ──> Leadership ── gained: interrupt runs of older epochs,
                              │   one `missed` row for the slots since the last row
                              │   but the latest, resume first, then the catch-up
                              │   run of the latest (slots.plan_takeover)
                              └── stepped down (lost, error): cancel the run
    Schedule ── on_fire(slot) ──> not leader: nothing (the leader records the slot)
                                  busy: `skipped_overlap` row
                                  else: resume first, then the slot's run
             ── on_slot(max instances / misfire / coalesced gap) ──> skipped / missed row

Every slot ends as exactly one `audit_run` row (unique `scheduled_for`): its run, a
`skipped_overlap` row or a `missed` row; every run the scheduler starts names its slot.
Runs carry the leader's epoch and every write checks it (store/leader.py), so a node
that froze and woke after a takeover writes nothing more. On SQLite a lock file next to
the database excludes a second daemon. This module only wires the parts: slot rules
(slots.py), leadership (leadership.py) and its lease (lease.py), the scheduler
(scheduler.py), slot rows (rows.py), runs (runs.py), /healthz and /metrics
(endpoint.py), and the leader's event delivery (delivery.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.commands.daemon.delivery import LeaderDelivery
from audit_job.commands.daemon.endpoint import Endpoint
from audit_job.commands.daemon.leadership import Change, Gained, Leadership
from audit_job.commands.daemon.lease import Lease
from audit_job.commands.daemon.rows import SlotRow, SlotRows
from audit_job.commands.daemon.runs import Runner
from audit_job.commands.daemon.scheduler import Schedule
from audit_job.commands.daemon.slots import Gap, missed_message, plan_takeover
from audit_job.config import LoadedConfig
from audit_job.errors import AuditJobError, FencedOut, StoreError
from audit_job.metrics import DaemonMetrics
from audit_job.models import RunStatus
from audit_job.store import leader as lease_store
from audit_job.store import runs as run_store
from audit_job.store import schema
from audit_job.store.engine import create_engine, describe_db_error
from audit_job.store.types import utcnow

log = logging.getLogger("audit_job.commands.daemon")
STOP_GRACE_SECONDS = 12.0  # SIGTERM: the run's own stop, then cancel; exit within ~15 s


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
        self._sqlite = make_url(settings.database.url).get_backend_name() == "sqlite"
        self.leadership = Leadership(settings.daemon.lease_seconds)
        self.lease = Lease(self.leadership, self.node, self._apply, force=self._sqlite)
        self.schedule = Schedule(settings.schedule, self._fire, self._account)
        self.delivery = LeaderDelivery(settings)
        self.endpoint = Endpoint(
            self.metrics,
            self.leadership,
            self.schedule,
            lambda: self.lease.db_error,
            settings,
        )
        self.rows = SlotRows(self.metrics, self._spawn)
        self.runner = Runner(
            lambda: self.loaded,
            self.metrics,
            self.rows,
            self._holds,
            lambda: self._apply(self.leadership.step_down("fenced out")),
            self._spawn,
            on_commit=self.delivery.wake,
        )
        self._busy: str | None = None
        self._idle = asyncio.Event()  # set whenever _busy is None
        self._idle.set()
        self._gain_task: asyncio.Task[None] | None = None
        self._fire_task: asyncio.Task[Any] | None = None  # a slot's work under way
        self._tasks: set[asyncio.Task[Any]] = set()
        self.engine: AsyncEngine | None = None

    @property
    def lease_seconds(self) -> float:
        return self.leadership.lease_seconds

    @property
    def epoch(self) -> int | None:
        return self.leadership.epoch

    @property
    def is_leader(self) -> bool:
        return self.leadership.is_leader

    # -- life --------------------------------------------------------------------------

    async def serve(self) -> None:
        settings = self.loaded.settings
        self.loaded.require_credentials()
        self.delivery.check()
        lock = None
        if self._sqlite:
            lock = lease_store.lock_sqlite_file(make_url(settings.database.url).database or "")
        self.engine = create_engine(
            settings.database.url,
            connect_timeout_seconds=min(settings.database.connect_timeout_seconds, 5),
            pool_size=2,
        )
        self.lease.engine = self.rows.engine = self.runner.engine = self.engine
        self.endpoint.engine = self.engine
        runner = None
        try:
            if settings.daemon.listen:
                runner = await self.endpoint.start(settings.daemon.listen)
            await self._wait_for_schema()
            if self.stop.is_set():
                return
            self.schedule.start()
            log.info(
                "daemon %s started (%s, misfire grace %.0f s, lease %.0f s); next fire at %s",
                self.node,
                self.schedule.describe(),
                settings.schedule.grace_seconds,
                self.lease_seconds,
                self.schedule.next_fire(),
                extra={"event": "daemon_started"},
            )
            if settings.remediation.auto:
                log.warning(
                    "[remediation] auto = true: this daemon KICKS users out of their sessions "
                    "after each run (open violations expecting inactive, at most %d users)",
                    settings.remediation.max_users,
                    extra={"event": "remediation_auto"},
                )
            lease = asyncio.create_task(self.lease.keep(self.stop), name="lease")
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
            self.lease.db_error = reason
            log.warning("database not reachable, retrying in %.0f s: %s", delay, reason)
            try:
                await asyncio.wait_for(self.stop.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, 30.0)

    async def _shut_down(self, lease: asyncio.Task[None]) -> None:
        log.info("stopping: interrupting the current run (resumable)", extra={"event": "stopping"})
        self.schedule.pause()
        self.runner.interrupt()
        # A slot's work is waited for too (it ends at once: nothing starts while stopping);
        # left to the loop's teardown, it ended in a CancelledError traceback.
        tasks = (self.runner.task, self._gain_task, self._fire_task)
        waiting = [t for t in tasks if t is not None and not t.done()]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=STOP_GRACE_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self.schedule.shutdown()
        await self.delivery.stop()  # releases the sinks' leases before the leadership
        lease.cancel()
        await asyncio.gather(lease, return_exceptions=True)
        await self.lease.release()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def reload(self) -> None:
        """SIGHUP: reload the file; schedule and run settings apply from the next fire.
        The database URL, listener, lease, node name, [events] and sinks need a restart."""
        if self.reload_config is None:
            return
        try:
            fresh = self.reload_config()
        except AuditJobError as exc:
            log.error("SIGHUP: configuration not reloaded: %s", exc, extra={"event": "reload"})
            return
        old = self.loaded.settings
        for section in ("database", "daemon", "events", "sink"):
            if getattr(old, section) != getattr(fresh.settings, section):
                shown = "[[sink]]" if section == "sink" else f"[{section}]"
                log.warning("SIGHUP: %s changes take effect after a restart", shown)
        fresh = LoadedConfig(
            fresh.settings.model_copy(
                update={
                    "database": old.database,
                    "daemon": old.daemon,
                    "events": old.events,
                    "sink": old.sink,
                }
            ),
            fresh.origin,
            fresh.warnings,
        )
        self.loaded = fresh
        self.schedule.reschedule(fresh.settings.schedule)
        log.info(
            "SIGHUP: configuration reloaded from %s; next fire at %s",
            fresh.origin,
            self.schedule.next_fire(),
            extra={"event": "reload"},
        )

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- leadership --------------------------------------------------------------------

    def _apply(self, changes: list[Change]) -> None:
        for change in changes:
            if isinstance(change, Gained):
                self._gain(change.epoch)
            else:
                self._step_down(change.reason)

    def _gain(self, epoch: int) -> None:
        self.metrics.leader, self.metrics.epoch = True, epoch
        self.delivery.start()
        token = self.rows.held.start()  # until _on_gain has accounted for the slots so far
        log.info("leader now (epoch %d)", epoch, extra={"event": "leader_gained"})
        self._gain_task = self._spawn(self._on_gain(epoch, token))

    def _step_down(self, reason: str) -> None:
        log.warning(
            "not leader any more (%s); the current run stops without writing more",
            reason,
            extra={"event": "leader_lost"},
        )
        self.metrics.leader = False
        self.delivery.step_down()
        self.rows.held.drop()  # the next takeover accounts for those slots
        self.runner.cancel()
        if self._gain_task is not None and not self._gain_task.done():
            self._gain_task.cancel()

    def _holds(self, epoch: int) -> bool:
        return self.leadership.holds(epoch) and not self.stop.is_set()

    async def _on_gain(self, epoch: int, token: int) -> None:
        """Account for what happened while nobody (or another node) led, then catch up."""
        assert self.engine is not None
        while self._busy and self._holds(epoch):  # the previous epoch's work is ending
            try:
                await asyncio.wait_for(self._idle.wait(), 0.5)
            except TimeoutError:
                pass
        if not self._holds(epoch):
            return
        self._busy = "taking over"
        self._idle.clear()
        try:
            catch_up = self.loaded.settings.schedule.catch_up
            async with self.engine.begin() as conn:
                await run_store.lock_run_creation(conn)  # lock order as in run.py
                await lease_store.check_fence(conn, epoch)
                for run_id in await lease_store.interrupt_superseded(conn, epoch):
                    log.info("run %d of an older leader is marked interrupted", run_id)
                last = await lease_store.last_slot(conn)
                plan = plan_takeover(self.schedule.trigger, last, utcnow(), catch_up=catch_up)
                missed = plan.missed
                recorded = missed is not None and await lease_store.record_slot(
                    conn,
                    missed[1],
                    RunStatus.MISSED,
                    missed_message(*missed),
                    epoch=epoch,
                    missed=missed,
                )
            if recorded and missed is not None:
                self.metrics.missed_slots += missed[2]
                log.warning("%s", missed_message(*missed), extra={"event": "slots_missed"})
            if plan.catch_up is None:
                self.rows.release(epoch, token, plan.accounted)
                await self.runner.work(epoch, None, token)
                return
            # The rows of later slots stay held until the catch-up run has its row.
            slot = plan.catch_up.isoformat()
            log.info("catching up slot %s", slot, extra={"event": "catch_up"})
            self._busy = f"the catch-up run of slot {slot}"
            await self.runner.work(epoch, plan.catch_up, token)
        except FencedOut as exc:
            self.rows.held.drop(token)
            log.warning("%s", exc, extra={"event": "fenced_out"})
        except Exception as exc:
            self.rows.held.drop(token)
            log.error("taking over failed: %s", describe_db_error(exc), extra={"event": "gain"})
        finally:
            self._busy = None
            self._idle.set()

    # -- slots ---------------------------------------------------------------------------

    def _account(self, slot: datetime, status: RunStatus, missed: Gap | None) -> None:
        message = missed_message(*missed) if missed else self._still_going()
        self.rows.account(
            self.epoch if self.is_leader else None, SlotRow(slot, status, message, missed)
        )

    def _still_going(self) -> str:
        return f"{self._busy or 'a run'} was still going at this slot"

    async def _fire(self, slot: datetime) -> None:
        skipped = SlotRow(slot, RunStatus.SKIPPED_OVERLAP, self._still_going())
        if self.rows.held.hold(skipped):  # an earlier slot has no row yet
            return
        epoch = self.epoch
        if not self.is_leader or epoch is None:
            return  # a follower
        if self._busy:
            await self.rows.record(epoch, skipped)
            return
        self._busy = f"the run of slot {slot.isoformat()}"
        self._idle.clear()
        self._fire_task = asyncio.current_task()
        token = self.rows.held.start()  # until the slot's run has its row (after a resume)
        try:
            await self.runner.work(epoch, slot, token)
        finally:
            self._fire_task = None
            self._busy = None
            self._idle.set()
            log.info("next fire at %s", self.schedule.next_fire(), extra={"event": "next_fire"})
