"""The APScheduler wiring: one job on the schedule's trigger, its events as slot notices.

    AsyncIOScheduler ── submitted(slot) ──> the job ──> on_fire(slot)
                     ── coalesced gap before a slot ──> on_slot(last, missed, gap)
                     ── max instances (still going) ──> on_slot(slot, skipped_overlap)
                     ── missed (past misfire grace) ──> on_slot(slot, missed, 1 slot)

`max_instances=1` and coalescing keep one audit at a time; the daemon turns each notice
into a run or a row. APScheduler is told nothing about leadership: every node fires every
slot, and only the leader acts on it.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
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

from audit_job.commands.daemon.slots import Gap, coalesced_gap, make_trigger, norm
from audit_job.config import ScheduleSettings
from audit_job.models import RunStatus
from audit_job.store.types import utcnow

JOB_ID = "audit"

OnFire = Callable[[datetime], Awaitable[None]]
OnSlot = Callable[[datetime, RunStatus, Gap | None], None]


def grace_seconds(schedule: ScheduleSettings) -> int:
    return max(1, math.ceil(schedule.grace_seconds))


class Schedule:
    def __init__(
        self,
        schedule: ScheduleSettings,
        on_fire: OnFire,
        on_slot: OnSlot,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = schedule
        self.trigger: BaseTrigger = make_trigger(schedule)
        self.on_fire = on_fire
        self.on_slot = on_slot
        self.now = now
        self.scheduler = AsyncIOScheduler(timezone=ZoneInfo(schedule.timezone))
        self._submitted: deque[datetime] = deque()
        self._last_seen: datetime = norm(now())

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    def start(self) -> None:
        logging.getLogger("apscheduler.scheduler").setLevel(logging.WARNING)
        self.scheduler.add_listener(
            self._on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )
        self.scheduler.add_job(
            self._job,
            self.trigger,
            id=JOB_ID,
            name="audit",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=grace_seconds(self.settings),
        )
        self._last_seen = norm(self.now())  # earlier slots are the takeover's to account for
        self.scheduler.start()

    def describe(self) -> str:
        schedule = self.settings
        if schedule.interval_seconds is not None:
            return f"every {schedule.interval_seconds:g} s"
        return f"cron '{schedule.cron}' {schedule.timezone}"

    def next_fire(self) -> str:
        job = self.scheduler.get_job(JOB_ID)
        when = job.next_run_time if job is not None else None
        return when.isoformat() if when is not None else "never"

    def reschedule(self, schedule: ScheduleSettings) -> None:
        """New settings from the next fire on (SIGHUP)."""
        if schedule == self.settings:
            return
        self.settings = schedule
        self.trigger = make_trigger(schedule)
        self._last_seen = norm(self.now())
        self.scheduler.modify_job(JOB_ID, misfire_grace_time=grace_seconds(schedule))
        self.scheduler.reschedule_job(JOB_ID, trigger=self.trigger)

    def pause(self) -> None:
        self.scheduler.pause()

    def shutdown(self) -> None:
        self.scheduler.shutdown(wait=False)

    async def _job(self) -> None:
        if self._submitted:
            await self.on_fire(self._submitted.popleft())

    def _on_event(self, event: JobSubmissionEvent | JobExecutionEvent) -> None:
        if isinstance(event, JobExecutionEvent):  # missed: past the misfire grace time
            slot = norm(event.scheduled_run_time)
            if slot in self._submitted:
                self._submitted.remove(slot)
            self.on_slot(slot, RunStatus.MISSED, (slot, slot, 1))
            return
        slot = norm(event.scheduled_run_times[-1])
        gap = coalesced_gap(self.trigger, self._last_seen, slot)
        self._last_seen = max(self._last_seen, slot)
        if gap is not None:  # coalesced away by the scheduler: still recorded
            self.on_slot(gap[1], RunStatus.MISSED, gap)
        if event.code == EVENT_JOB_SUBMITTED:
            self._submitted.append(slot)
        else:
            self.on_slot(slot, RunStatus.SKIPPED_OVERLAP, None)
