"""The learned rate on real SQLite and PostgreSQL: written, replaced, read back only while
usable (fresh, same configured cap), keyed by host and key id, never holding the secret."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.store.engine import create_engine
from audit_job.store.learned_rate import LearnedRate, read_learned_rate, write_learned_rate
from audit_job.store.tables import learned_rate

HOST = "https://tenant.authing.cn"
KEY = "6489a1d2c0ffee0123456789"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    yield engine
    await engine.dispose()


async def write(
    engine: AsyncEngine,
    rate: float,
    *,
    cap: float = 1000.0,
    at: datetime = T0,
    host: str = HOST,
    key: str = KEY,
    bounded: bool = True,
) -> None:
    async with engine.begin() as conn:
        await write_learned_rate(
            conn,
            host,
            key,
            rate_per_second=rate,
            server_bounded=bounded,
            configured_rate_per_second=cap,
            now=at,
        )


async def read(
    engine: AsyncEngine,
    *,
    cap: float = 1000.0,
    days: float = 7,
    now: datetime = T0,
    host: str = HOST,
    key: str = KEY,
) -> LearnedRate | None:
    async with engine.connect() as conn:
        return await read_learned_rate(
            conn, host, key, configured_rate_per_second=cap, max_age_days=days, now=now
        )


async def test_nothing_learned_yet(engine: AsyncEngine) -> None:
    assert await read(engine) is None


async def test_written_then_read_back(engine: AsyncEngine) -> None:
    await write(engine, 288.5)
    assert await read(engine, now=T0 + timedelta(hours=1)) == LearnedRate(288.5, True, 1000.0, T0)


async def test_a_new_learning_replaces_the_old_one(engine: AsyncEngine) -> None:
    await write(engine, 288.5)
    await write(engine, 150.25, at=T0 + timedelta(minutes=5), bounded=False)
    learned = await read(engine, now=T0 + timedelta(minutes=6))
    assert learned == LearnedRate(150.25, False, 1000.0, T0 + timedelta(minutes=5))
    async with engine.connect() as conn:
        assert len((await conn.execute(select(learned_rate))).all()) == 1


async def test_an_old_learning_is_forgotten(engine: AsyncEngine) -> None:
    await write(engine, 288.5)
    assert await read(engine, days=7, now=T0 + timedelta(days=7)) is not None
    assert await read(engine, days=7, now=T0 + timedelta(days=7, seconds=1)) is None
    assert await read(engine, days=0.5, now=T0 + timedelta(hours=13)) is None


async def test_a_learning_under_another_cap_is_not_used(engine: AsyncEngine) -> None:
    await write(engine, 288.5, cap=1000.0)
    assert await read(engine, cap=500.0) is None
    assert await read(engine, cap=1000.0000000001) is not None  # the same cap, computed


async def test_host_and_key_keep_learnings_apart(engine: AsyncEngine) -> None:
    await write(engine, 100.0, host=HOST, key="key-a")
    await write(engine, 200.0, host=HOST, key="key-b")
    await write(engine, 300.0, host="https://other.example", key="key-a")
    assert (await read(engine, key="key-a")).rate_per_second == 100.0  # type: ignore[union-attr]
    assert (await read(engine, key="key-b")).rate_per_second == 200.0  # type: ignore[union-attr]
    other = await read(engine, host="https://other.example", key="key-a")
    assert other is not None and other.rate_per_second == 300.0
    # The host as configured, give or take case and a trailing slash.
    again = await read(engine, host="HTTPS://Tenant.Authing.cn/", key="key-a")
    assert again is not None and again.rate_per_second == 100.0


async def test_only_the_key_id_is_stored(engine: AsyncEngine) -> None:
    await write(engine, 288.5)
    async with engine.connect() as conn:
        rows = (await conn.execute(select(learned_rate))).mappings().all()
    assert [dict(row) for row in rows] == [
        {
            "host": HOST,
            "access_key_id": KEY,
            "rate_per_second": 288.5,
            "server_bounded": True,
            "configured_rate_per_second": 1000.0,
            "learned_at": T0,
        }
    ]


@pytest.mark.parametrize("rate", [0.0, -5.0, float("nan"), float("inf")])
async def test_a_meaningless_rate_is_refused(engine: AsyncEngine, rate: float) -> None:
    with pytest.raises(ValueError, match="rate_per_second"):
        await write(engine, rate)
    assert await read(engine) is None
