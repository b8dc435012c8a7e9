"""The leader lease, its fence and slot rows, on SQLite and PostgreSQL; slot arithmetic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from audit_job.commands.daemon.slots import make_trigger, norm, slots_between
from audit_job.config import ScheduleSettings
from audit_job.errors import FencedOut
from audit_job.models import RunStatus
from audit_job.store import leader
from audit_job.store.engine import opened


async def test_lease_take_renew_release_and_takeover(db_url: str) -> None:
    async with opened(db_url) as engine:

        async def attempt(node: str, epoch: int | None, seconds: float = 30) -> int | None:
            async with engine.begin() as conn:
                return await leader.take_or_renew(conn, node, epoch, seconds)

        assert await attempt("a", None) == 1
        assert await attempt("b", None) is None  # a's lease is live
        assert await attempt("a", 1) == 1  # renewed
        async with engine.begin() as conn:
            await leader.release(conn, "a", 1)
        assert await attempt("b", None) == 2  # released: taken at once, one epoch on
        assert await attempt("a", 1) is None  # a believes in epoch 1: not leader
        async with engine.begin() as conn:
            await leader.check_fence(conn, 2)
            with pytest.raises(FencedOut, match="epoch 1 is over"):
                await leader.check_fence(conn, 1)
        assert await attempt("b", 2, seconds=0.2) == 2
        await asyncio.sleep(0.4)
        assert await attempt("c", None) == 3  # expired: taken over
        assert await attempt("b", 2) is None
        lease = await _lease(engine)
        assert (lease.owner, lease.epoch) == ("c", 3)


async def _lease(engine):  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return await leader.read_lease(conn)


async def test_a_slot_gets_one_row_whoever_records_it(db_url: str) -> None:
    slot = datetime(2026, 1, 1, 12, tzinfo=UTC)
    async with opened(db_url) as engine:
        async with engine.begin() as conn:
            assert await leader.record_slot(conn, slot, RunStatus.SKIPPED_OVERLAP, "busy", epoch=1)
            assert not await leader.record_slot(
                conn, slot, RunStatus.MISSED, "again", epoch=2, missed=(slot, slot, 1)
            )
        async with engine.connect() as conn:
            assert await leader.last_slot(conn) == slot


def test_interval_slots_are_anchored_so_every_node_agrees() -> None:
    trigger = make_trigger(ScheduleSettings(interval_seconds=2))
    now = datetime(2026, 5, 5, 10, 0, 3, 500000, tzinfo=UTC)
    fire = trigger.get_next_fire_time(None, now)
    assert norm(fire) == datetime(2026, 5, 5, 10, 0, 4, tzinfo=UTC)
    found = slots_between(trigger, now - timedelta(seconds=7), now)
    assert found == (
        datetime(2026, 5, 5, 9, 59, 58, tzinfo=UTC),
        datetime(2026, 5, 5, 10, 0, 2, tzinfo=UTC),
        3,
    )
    assert slots_between(trigger, now, now) is None


def test_cron_slots_between() -> None:
    trigger = make_trigger(ScheduleSettings(cron="*/15 * * * *", timezone="Asia/Shanghai"))
    after = datetime(2026, 5, 5, 10, 0, tzinfo=UTC)
    found = slots_between(trigger, after, after + timedelta(hours=1))
    assert found == (
        datetime(2026, 5, 5, 10, 15, tzinfo=UTC),
        datetime(2026, 5, 5, 11, 0, tzinfo=UTC),
        4,
    )
