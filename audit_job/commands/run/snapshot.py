"""A run's snapshot: the pairs it will check, taken once when it starts, from the enabled
targets (one INSERT .. SELECT, in two parallel halves on PostgreSQL) or streamed from the
operator's `[source] query`; and `run --dry-run`, which counts the same pairs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.commands.database import open_database
from audit_job.commands.targets import validate_id
from audit_job.config import LoadedConfig, Settings
from audit_job.errors import StoreError
from audit_job.policy import parse_expect
from audit_job.store import snapshot as snapshot_store
from audit_job.store import targets as target_store
from audit_job.store.engine import describe_db_error, opened

log = logging.getLogger(__name__)
SOURCE_BATCH = 2000
SNAPSHOT_PARTS = 2  # PostgreSQL connections taking a snapshot; a power of two


async def plan(loaded: LoadedConfig, app_id: str | None, user_id: str | None) -> dict[str, Any]:
    """`run --dry-run`: how many pairs a run would check, and the first few."""
    settings = loaded.settings
    if settings.source.query:
        count, sample = 0, []
        async for app, user, _expect in source_pairs(settings, app_id, user_id):
            count += 1
            if len(sample) < 10:
                sample.append({"app_id": app, "user_id": user})
        return {"pairs": count, "sample": sample, "source": "[source] query"}
    async with open_database(settings) as engine:
        async with engine.connect() as conn:
            count = await target_store.count(
                conn, enabled_only=True, app_id=app_id, user_id=user_id
            )
        sample = []
        async for row in target_store.stream(
            engine, app_id=app_id, user_id=user_id, enabled_only=True, batch=10
        ):
            sample.append({"app_id": row["app_id"], "user_id": row["user_id"]})
            if len(sample) >= 10:
                break
    return {"pairs": count, "sample": sample, "source": "audit_target (enabled)"}


async def take_snapshot(
    engine: AsyncEngine, run_id: int, settings: Settings, app_id: str | None, user_id: str | None
) -> None:
    """The run's pending rows, from `[source] query` or the enabled targets, then its total.
    Taken again on a resume when the first attempt did not finish (rows are unique)."""
    started = time.monotonic()
    async with engine.begin() as conn:
        await snapshot_store.prepare_snapshot(conn, run_id)
    if settings.source.query:
        batch: list[tuple[str, str, str | None]] = []
        async for pair in source_pairs(settings, app_id, user_id):
            batch.append(pair)
            if len(batch) >= SOURCE_BATCH:
                async with engine.begin() as conn:
                    await snapshot_store.add_snapshot_rows(conn, run_id, batch)
                batch = []
        async with engine.begin() as conn:
            await snapshot_store.add_snapshot_rows(conn, run_id, batch)
            total = await snapshot_store.finish_snapshot(conn, run_id)
    else:
        # PostgreSQL: two connections insert disjoint halves at once (the server's index
        # and foreign-key work per row is the cost; 18.2 s -> 10.6 s for 1,000,000 pairs on
        # the 2-core bench host, 4 parts was slower there). Each half commits alone: a
        # process killed in between leaves snapshot_at unset, and the resume completes it.
        parts = 1
        if engine.dialect.name == "postgresql" and app_id is None and user_id is None:
            parts = SNAPSHOT_PARTS

        async def take(index: int) -> None:
            async with engine.begin() as conn:
                share = (index, parts) if parts > 1 else None
                await snapshot_store.snapshot_targets(conn, run_id, app_id, user_id, share)

        await asyncio.gather(*(take(index) for index in range(parts)))
        async with engine.begin() as conn:
            total = await snapshot_store.finish_snapshot(conn, run_id)
    log.info(
        "run %d: snapshot of %d pairs taken in %.1f s",
        run_id,
        total,
        time.monotonic() - started,
        extra={"event": "snapshot_taken"},
    )


async def source_pairs(
    settings: Settings, app_id: str | None, user_id: str | None
) -> AsyncIterator[tuple[str, str, str | None]]:
    """Pairs from the operator's `[source] query`, streamed, each with the query's
    `expect` column when it has one (None: no expectation of its own); bad rows skipped
    with a warning (the first few are named)."""
    source = settings.source
    url = source.url or settings.database.url
    skipped = 0
    async with opened(url) as src, src.connect() as conn:
        try:
            result = await conn.stream(text(source.query or ""))
        except Exception as exc:
            raise StoreError(f"[source] query failed: {describe_db_error(exc)}") from exc
        keys = list(result.keys())
        if len(keys) < 2:
            raise StoreError("[source] query must return two columns: app_id, user_id")
        app_at = keys.index("app_id") if "app_id" in keys else 0
        user_at = keys.index("user_id") if "user_id" in keys else 1
        expect_at = keys.index("expect") if "expect" in keys else None
        number = 0
        async for row in result:
            number += 1
            app, user = row[app_at], row[user_at]
            app = "" if app is None else str(app)
            user = "" if user is None else str(user)
            problem = validate_id("app_id", app) or validate_id("user_id", user)
            expect = None
            if expect_at is not None and not problem:
                try:
                    expect = parse_expect(row[expect_at])
                except ValueError as exc:
                    problem = str(exc)
            if problem:
                skipped += 1
                if skipped <= 10:
                    log.warning("[source] query row %d skipped: %s", number, problem)
                continue
            if (app_id is None or app == app_id) and (user_id is None or user == user_id):
                yield app, user, expect
    if skipped:
        log.warning("[source] query: %d rows skipped in all", skipped)
