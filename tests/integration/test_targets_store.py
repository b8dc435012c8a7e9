"""Timestamps and targets against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.commands import targets as service
from audit_job.commands.targets import IMPORT_BATCH
from audit_job.config import Settings
from audit_job.store.engine import create_engine
from audit_job.store.tables import audit_run, audit_target, session_check

ZONED = [
    datetime(2026, 3, 1, 8, 0, 0, 123456, tzinfo=ZoneInfo("Asia/Shanghai")),
    datetime(2026, 7, 4, 23, 30, tzinfo=ZoneInfo("America/Los_Angeles")),  # DST, crosses a day
    datetime(2026, 1, 1, 0, 15, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
    datetime(2026, 10, 25, 1, 30, fold=1, tzinfo=ZoneInfo("Europe/London")),  # the 2nd 01:30
]


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    yield engine
    await engine.dispose()


def settings_for(url: str) -> Settings:
    return Settings.model_validate({"database": {"url": url}})


async def snapshot(engine: AsyncEngine) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(audit_target).order_by(audit_target.c.app_id, audit_target.c.user_id)
        )
        return [tuple(row) for row in result]


async def stored_utc_text(engine: AsyncEngine, table: str, column: str) -> list[str]:
    """What the database itself holds, rendered as UTC wall-clock text."""
    expr = f"{column} AT TIME ZONE 'UTC'" if engine.dialect.name == "postgresql" else column
    async with engine.connect() as conn:
        rows = await conn.execute(text(f"SELECT {expr} FROM {table} ORDER BY {column}"))
        return [str(value) for (value,) in rows]


async def test_aware_datetimes_come_back_as_the_same_instant_in_utc(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(audit_target),
            [
                {"app_id": "a", "user_id": str(n), "enabled": True, "created_at": moment}
                for n, moment in enumerate(ZONED)
            ],
        )
        run_id = (
            await conn.execute(
                insert(audit_run)
                .values(trigger="manual", status="running", started_at=ZONED[0])
                .returning(audit_run.c.id)
            )
        ).scalar_one()
        await conn.execute(
            insert(session_check),
            [
                {
                    "run_id": run_id,
                    "app_id": "a",
                    "user_id": str(n),
                    "status": "active",
                    "active": True,
                    "checked_at": moment,
                }
                for n, moment in enumerate(ZONED)
            ],
        )
    async with engine.connect() as conn:
        created = (
            await conn.execute(select(audit_target.c.created_at).order_by(audit_target.c.user_id))
        ).scalars()
        checked = (
            await conn.execute(select(session_check.c.checked_at).order_by(session_check.c.user_id))
        ).scalars()
        started = (await conn.execute(select(audit_run.c.started_at))).scalar_one()
        for values in (list(created), list(checked)):
            # The same instants. (Compared in UTC: PEP 495 makes a fold=1 time unequal to
            # every time in another zone, even the same instant.)
            assert values == [z.astimezone(UTC) for z in ZONED]
            assert all(v.tzinfo is UTC for v in values)
            assert [v.replace(tzinfo=None) for v in values] == [
                z.astimezone(UTC).replace(tzinfo=None) for z in ZONED
            ]
        assert started == ZONED[0] and started.tzinfo is UTC
        # Ordering in SQL follows the instants, not the local wall clock.
        earliest = (await conn.execute(select(func.min(audit_target.c.created_at)))).scalar_one()
        assert earliest == ZONED[2].astimezone(UTC)
    # And what is stored is UTC, so plain SQL users see UTC too.
    assert (await stored_utc_text(engine, "audit_target", "created_at"))[0].startswith(
        "2026-01-01 03:45:00"
    )
    assert "2026-03-01 00:00:00.123456" in await stored_utc_text(
        engine, "session_check", "checked_at"
    )


async def test_naive_datetimes_are_refused(engine: AsyncEngine) -> None:
    naive = datetime(2026, 3, 1, 8, 0)
    with pytest.raises(StatementError, match="expected an aware datetime"):
        async with engine.begin() as conn:
            await conn.execute(
                insert(audit_target).values(app_id="a", user_id="u", enabled=True, created_at=naive)
            )
    with pytest.raises(StatementError, match="expected an aware datetime"):
        async with engine.begin() as conn:
            await conn.execute(
                insert(audit_run).values(trigger="manual", status="running", started_at=naive)
            )
    assert await snapshot(engine) == []


async def test_import_is_idempotent_and_collapses_duplicates(
    db_url: str, engine: AsyncEngine
) -> None:
    settings = settings_for(db_url)
    # More rows than one batch, with duplicates inside a batch and across batches.
    pairs = [f"app{n % 3},user{n}" for n in range(IMPORT_BATCH + 500)]
    body = pairs + pairs[:10] + pairs[-10:] + pairs[IMPORT_BATCH - 5 : IMPORT_BATCH + 5]
    data = ("app_id,user_id\n" + "\n".join(body) + "\n").encode()

    first = await service.import_csv(settings, io.BytesIO(data), "t.csv")
    assert (first.read, first.added, first.rejected) == (len(body), len(pairs), 0)
    assert first.unchanged == len(body) - len(pairs)
    assert first.total_after == len(pairs)
    before = await snapshot(engine)
    assert len(before) == len(pairs)

    again = await service.import_csv(settings, io.BytesIO(data), "t.csv")
    assert (again.read, again.added, again.unchanged, again.total_after) == (
        len(body),
        0,
        len(body),
        len(pairs),
    )
    assert await snapshot(engine) == before  # created_at and enabled untouched


async def test_enabled_column_updates_existing_pairs_only_when_given(
    db_url: str, engine: AsyncEngine
) -> None:
    settings = settings_for(db_url)
    await service.import_csv(
        settings, io.BytesIO(b"app_id,user_id,enabled\na,1,false\na,2,\na,3,true\n"), "x"
    )
    created = {row[1]: row[3] for row in await snapshot(engine)}
    data = b"user_id,enabled,app_id\n1,,a\n2,false\n3,false,a\n3,true,a\n"
    summary = await service.import_csv(settings, io.BytesIO(data), "x")
    # "2,false" lacks app_id (header order swapped): rejected, not imported sideways.
    assert [(r.line, r.reason) for r in summary.rejections] == [(3, "missing column app_id")]
    rows = await snapshot(engine)
    assert [(r[1], r[2]) for r in rows] == [("1", False), ("2", True), ("3", True)]
    assert {row[1]: row[3] for row in rows} == created  # created_at never moves


@pytest.mark.parametrize(
    "odd_id",
    [
        "'; DROP TABLE audit_target; --",
        "100%",
        "a_b",
        'say "hi"',
        "it's",
        "back\\slash",
        "é" * 255,
        "😀" * 255,  # outside the BMP: 4 bytes each in UTF-8
        "用户" * 127 + "末",
    ],
    ids=["sql", "percent", "underscore", "dquote", "squote", "backslash", "e255", "emoji", "cjk"],
)
async def test_odd_ids_are_stored_verbatim(odd_id: str, db_url: str, engine: AsyncEngine) -> None:
    settings = settings_for(db_url)
    assert await service.add(settings, odd_id, odd_id) == "added"
    assert await service.add(settings, "x" + odd_id[:10], "neighbour") == "added"
    assert await service.count(settings, odd_id) == {"targets": 1, "enabled": 1}
    # LIKE-style wildcards must not widen an app-wide disable.
    assert await service.set_enabled(settings, odd_id, None, False) == 1
    rows = {(r[0], r[1]): r[2] for r in await snapshot(engine)}
    assert rows == {(odd_id, odd_id): False, ("x" + odd_id[:10], "neighbour"): True}
    listed = [row async for row in service.listing(settings, odd_id)]
    assert [(r["app_id"], r["user_id"]) for r in listed] == [(odd_id, odd_id)]
    assert await service.remove(settings, odd_id, odd_id) is True
    assert await service.remove(settings, odd_id, odd_id) is False
    async with engine.connect() as conn:  # the table is still there, with its neighbour
        assert (await conn.execute(select(func.count()).select_from(audit_target))).scalar() == 1
