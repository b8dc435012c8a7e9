"""The daemon's slot rules, on explicit times: triggers, slots between two times, gaps,
and the rows a takeover writes (the catch-up rule)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.base import BaseTrigger

from audit_job.commands.daemon.slots import (
    Takeover,
    coalesced_gap,
    make_trigger,
    norm,
    plan_takeover,
    slots_between,
)
from audit_job.config import ScheduleSettings


def at(hour: int, minute: int = 0, second: int = 0, micro: int = 0, day: int = 5) -> datetime:
    return datetime(2026, 5, day, hour, minute, second, micro, tzinfo=UTC)


EVERY_2S = make_trigger(ScheduleSettings(interval_seconds=2))
HOURLY = make_trigger(ScheduleSettings(cron="0 * * * *"))
KOLKATA_9AM = make_trigger(ScheduleSettings(cron="0 9 * * *", timezone="Asia/Kolkata"))


def test_norm_stores_a_slot_in_utc_to_the_millisecond() -> None:
    local = datetime(2026, 5, 5, 15, 30, 0, 499_600, tzinfo=ZoneInfo("Asia/Kolkata"))
    assert norm(local) == at(10, 0, 0, 500_000)
    assert norm(at(10, 0, 1, 999_999)) == at(10, 0, 2)
    assert norm(at(10)).tzinfo is UTC


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
def test_interval_slots_are_anchored_in_utc_whatever_the_zone(zone: str) -> None:
    trigger = make_trigger(ScheduleSettings(interval_seconds=90, timezone=zone))
    # 2000-01-01 + a whole number of 90 s steps: midnight UTC is a slot, 00:01:30 the next.
    assert norm(trigger.get_next_fire_time(None, at(0, 0, 1))) == at(0, 1, 30)
    assert slots_between(trigger, at(0), at(0, 6)) == (at(0, 1, 30), at(0, 6), 4)


@pytest.mark.parametrize(
    ("after", "until", "expected"),
    [
        (at(10), at(10), None),  # an empty span
        (at(10, 0, 0, 500_000), at(10, 0, 1, 900_000), None),  # between two slots
        (at(10), at(10, 0, 1, 999_000), None),  # `after` itself is excluded
        (at(10), at(10, 0, 2), (at(10, 0, 2), at(10, 0, 2), 1)),  # `until` is included
        (at(10, 0, 1), at(10, 0, 3), (at(10, 0, 2), at(10, 0, 2), 1)),
        (at(9, 59, 53), at(10, 0, 0, 500_000), (at(9, 59, 54), at(10), 4)),
        (at(10), at(11), (at(10, 0, 2), at(11), 1800)),
    ],
)
def test_interval_slots_between(
    after: datetime, until: datetime, expected: tuple[datetime, datetime, int] | None
) -> None:
    assert slots_between(EVERY_2S, after, until) == expected


def test_interval_slots_agree_with_the_scheduler_fire_times() -> None:
    fired, when = [], at(10, 0, 0, 300_000)
    for _ in range(5):
        when = EVERY_2S.get_next_fire_time(None, when + timedelta(milliseconds=1))
        fired.append(norm(when))
    assert slots_between(EVERY_2S, at(10), fired[-1]) == (fired[0], fired[-1], 5)


@pytest.mark.parametrize(
    ("after", "until", "expected"),
    [
        (at(10, 0, 1), at(10, 59, 59), None),
        (at(10), at(11), (at(11), at(11), 1)),
        (at(10), at(13, 30), (at(11), at(13), 3)),
        (at(0), at(0, day=6), (at(1), at(0, day=6), 24)),
    ],
)
def test_cron_slots_between_in_utc(
    after: datetime, until: datetime, expected: tuple[datetime, datetime, int] | None
) -> None:
    assert slots_between(HOURLY, after, until) == expected


def test_cron_slots_follow_the_schedule_zone() -> None:
    # 09:00 in Kolkata (UTC+05:30, no daylight saving) is 03:30 UTC.
    assert slots_between(KOLKATA_9AM, at(0, day=1), at(0, day=4)) == (
        at(3, 30, day=1),
        at(3, 30, day=3),
        3,
    )
    assert slots_between(KOLKATA_9AM, at(3, 30, day=1), at(3, 29, day=2)) is None


@pytest.mark.parametrize(
    ("last_seen", "fired", "expected"),
    [
        (at(10), at(10, 0, 2), None),  # the next slot: nothing coalesced away
        (at(10, 0, 0, 400_000), at(10, 0, 2), None),  # last seen between slots
        (at(10), at(10, 0, 4), (at(10, 0, 2), at(10, 0, 2), 1)),
        (at(10), at(10, 0, 10), (at(10, 0, 2), at(10, 0, 8), 4)),
    ],
)
def test_coalesced_gap_is_every_slot_between_the_last_seen_and_the_fired_one(
    last_seen: datetime, fired: datetime, expected: tuple[datetime, datetime, int] | None
) -> None:
    assert coalesced_gap(EVERY_2S, last_seen, fired) == expected


def test_coalesced_gap_on_a_cron_schedule() -> None:
    assert coalesced_gap(HOURLY, at(10), at(14)) == (at(11), at(13), 3)
    assert coalesced_gap(HOURLY, at(10), at(11)) is None


# -- a takeover: the catch-up run serves the latest missed slot ----------------------------


@pytest.mark.parametrize("catch_up", [True, False])
def test_a_database_without_slot_rows_has_nothing_to_account_for(catch_up: bool) -> None:
    assert plan_takeover(EVERY_2S, None, at(10), catch_up=catch_up) == Takeover(None, None, None)


@pytest.mark.parametrize("catch_up", [True, False])
def test_no_slot_since_the_last_row_writes_nothing(catch_up: bool) -> None:
    plan = plan_takeover(EVERY_2S, at(10), at(10, 0, 1, 900_000), catch_up=catch_up)
    assert plan == Takeover(None, None, at(10))


def test_a_single_missed_slot_is_caught_up_without_a_missed_row() -> None:
    assert plan_takeover(EVERY_2S, at(10), at(10, 0, 2), catch_up=True) == Takeover(
        None, at(10, 0, 2), at(10, 0, 2)
    )
    assert plan_takeover(EVERY_2S, at(10), at(10, 0, 3), catch_up=False) == Takeover(
        (at(10, 0, 2), at(10, 0, 2), 1), None, at(10, 0, 2)
    )


def test_seven_seconds_down_at_two_seconds_misses_two_and_catches_up_the_third() -> None:
    assert plan_takeover(EVERY_2S, at(10), at(10, 0, 7), catch_up=True) == Takeover(
        (at(10, 0, 2), at(10, 0, 4), 2), at(10, 0, 6), at(10, 0, 6)
    )


def test_without_catch_up_the_missed_row_covers_every_slot() -> None:
    assert plan_takeover(EVERY_2S, at(10), at(10, 0, 7), catch_up=False) == Takeover(
        (at(10, 0, 2), at(10, 0, 6), 3), None, at(10, 0, 6)
    )


def test_a_long_downtime_catches_up_only_the_latest_slot() -> None:
    plan = plan_takeover(EVERY_2S, at(10), at(12, 0, 1), catch_up=True)
    assert plan == Takeover((at(10, 0, 2), at(11, 59, 58), 3599), at(12), at(12))


def test_cron_takeovers_in_utc_and_in_another_zone() -> None:
    assert plan_takeover(HOURLY, at(10), at(13, 30), catch_up=True) == Takeover(
        (at(11), at(12), 2), at(13), at(13)
    )
    # 09:00 Kolkata = 03:30 UTC: down from day 1's slot until day 4, 00:00 UTC.
    assert plan_takeover(KOLKATA_9AM, at(3, 30, day=1), at(0, day=4), catch_up=True) == Takeover(
        (at(3, 30, day=2), at(3, 30, day=2), 1), at(3, 30, day=3), at(3, 30, day=3)
    )


def _fire_times(trigger: BaseTrigger, after: datetime, until: datetime) -> list[datetime]:
    found, at_ = [], trigger.get_next_fire_time(after, after)
    while at_ is not None and at_ <= until:
        found.append(norm(at_))
        at_ = trigger.get_next_fire_time(at_, at_)
    return found


def _gap_slots(trigger: BaseTrigger, gap: tuple[datetime, datetime, int] | None) -> list[datetime]:
    if gap is None:
        return []
    first, last, count = gap
    slots = [first, *_fire_times(trigger, first, last)]
    assert len(slots) == count and slots[-1] == last
    return slots


@pytest.mark.parametrize("trigger", [EVERY_2S, HOURLY, KOLKATA_9AM], ids=["2s", "hourly", "9am"])
@pytest.mark.parametrize("catch_up", [True, False])
def test_every_slot_of_a_downtime_gets_exactly_one_row(
    trigger: BaseTrigger, catch_up: bool
) -> None:
    """Whatever the downtime: the missed row's slots and the catch-up slot are exactly
    the trigger's fire times since the last row, each once, the catch-up one the latest."""
    last = norm(trigger.get_next_fire_time(None, at(0, day=1)))
    step = (norm(trigger.get_next_fire_time(last, last)) - last) / 3
    for n in range(0, 14):
        now = last + step * n
        plan = plan_takeover(trigger, last, now, catch_up=catch_up)
        expected = _fire_times(trigger, last, now)
        rows = _gap_slots(trigger, plan.missed) + ([plan.catch_up] if plan.catch_up else [])
        assert rows == expected, (n, plan)
        assert plan.accounted == (expected[-1] if expected else last)
        assert (plan.catch_up is not None) == (catch_up and bool(expected))
