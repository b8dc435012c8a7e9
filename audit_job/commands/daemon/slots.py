"""Schedule slots, pure: when the trigger fires, and which slots a row must account for.

Interval slots are anchored at 2000-01-01 UTC, so every node computes the same slot
times whenever it started. A slot is stored in UTC to the millisecond (`norm`), so the
float arithmetic of two nodes cannot split one slot into two rows. Nothing here reads a
clock: every time is an argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from audit_job.config import ScheduleSettings

ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)
MAX_SLOT_SCAN = 100_000
TICK = timedelta(milliseconds=1)  # the resolution of a stored slot

Gap = tuple[datetime, datetime, int]  # (first, last, count) of consecutive slots


def make_trigger(schedule: ScheduleSettings) -> BaseTrigger:
    zone = ZoneInfo(schedule.timezone)
    if schedule.interval_seconds is not None:
        return IntervalTrigger(seconds=schedule.interval_seconds, start_date=ANCHOR, timezone=zone)
    return CronTrigger.from_crontab(schedule.cron, timezone=zone)


def norm(slot: datetime) -> datetime:
    """A slot as stored: UTC, whole milliseconds (float rounding must not split a slot)."""
    return datetime.fromtimestamp(round(slot.timestamp(), 3), UTC)


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


def coalesced_gap(trigger: BaseTrigger, last_seen: datetime, fired: datetime) -> Gap | None:
    """The slots after `last_seen` that the scheduler coalesced away before firing `fired`
    (a suspended process, a loop blocked past several slots): each still needs its row."""
    return slots_between(trigger, last_seen, fired - TICK)


@dataclass(frozen=True)
class Takeover:
    """The rows a new leader writes for the slots after the latest slot row."""

    missed: Gap | None  # summarised on one `missed` row
    catch_up: datetime | None  # the slot the catch-up run serves
    accounted: datetime | None  # the latest slot with a row once both are written


def plan_takeover(
    trigger: BaseTrigger, last: datetime | None, now: datetime, *, catch_up: bool
) -> Takeover:
    """Every slot in (last, now] gets exactly one row. With catch-up the latest of them
    gets the catch-up run and the `missed` row covers the ones before it (no `missed` row
    for a single slot); without, the `missed` row covers them all. A database without
    any slot row yet (`last` None) has nothing to account for."""
    if last is None:
        return Takeover(None, None, None)
    gap = slots_between(trigger, last, now)
    if gap is None:
        return Takeover(None, None, last)
    if not catch_up:
        return Takeover(gap, None, gap[1])
    latest = gap[1]
    before = slots_between(trigger, last, latest - TICK) if gap[2] > 1 else None
    return Takeover(before, latest, latest)


def missed_message(first: datetime, last: datetime, count: int) -> str:
    return (
        f"{count} slot(s) missed from {first.isoformat()} to {last.isoformat()} "
        "(no leader running, or past the misfire grace time)"
    )
