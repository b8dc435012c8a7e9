"""Reporting services: runs, results, a pair's history, changes, the per-app report and
the data for the HTML report. They return rows (lists or async iterators); the CLI prints.

Times given by people go through `parse_time`: ISO 8601 with or without a zone (no zone
means UTC), a bare date (midnight UTC), or a duration back from now (`90m`, `24h`, `7d`,
`2w`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.commands.database import open_database
from audit_job.config import Settings
from audit_job.errors import ConfigError, NotFound
from audit_job.models import CheckStatus
from audit_job.store import reports as store
from audit_job.store import violation_reads
from audit_job.store.reports import changes as change_store
from audit_job.store.reports import checks, listing
from audit_job.store.types import utcnow

REPORT_COLUMNS = [
    "run_id",
    "previous_run_id",
    "app_id",
    "total",
    "active",
    "inactive",
    "error",
    "pending",
    "active_pct",
    "previous_active_pct",
    "change_pct",
    "active_change",
    "violations_open",
    "violations_opened",
    "violations_resolved",
]
VIOLATION_LIST_LIMIT = 50  # the report lists the violations open after the run
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: datetime | None = None, *, option: str = "time") -> datetime:
    """An aware UTC datetime from what a person typed (see the module docstring)."""
    relative = _RELATIVE.match(text)
    if relative:
        seconds = float(relative.group(1)) * _UNIT_SECONDS[relative.group(2).lower()]
        return (now or utcnow()) - timedelta(seconds=seconds)
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        # fromisoformat accepts "Z" and a space separator from Python 3.11 on.
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{option}: not a time, got {text!r} (use ISO 8601 like 2026-11-26T09:00, "
            "a date like 2026-11-26, or an age like 24h or 7d)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_zone(name: str) -> tzinfo:
    if name.upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"--tz: unknown time zone, got {name!r} (use an IANA name like Europe/Berlin)"
        ) from None


def active_pct(counts: dict[str, int] | None) -> float | None:
    """Active share of the conclusive answers (errors and pending rows left out)."""
    if not counts:
        return None
    answered = counts["active"] + counts["inactive"]
    return round(100 * counts["active"] / answered, 1) if answered else None


async def resolve_run(conn: AsyncConnection, spec: str | int | None) -> int:
    """A run id from `--run` (an id, `latest`, or nothing for the latest real run)."""
    if spec is None or str(spec).lower() == "latest":
        # The run store (the write path's claims, bulk and dialect code) loads only here:
        # `audit-job runs` has no use for it.
        from audit_job.store import runs as run_store

        run_id = await run_store.latest_run_id(conn)
        if run_id is None:
            raise NotFound("no runs yet; start one with: audit-job run")
        return run_id
    if not str(spec).isdigit():
        raise ConfigError(f"--run: expected a run id or 'latest', got {spec!r}")
    if not await listing.run_exists(conn, int(spec)):
        raise NotFound(f"run {spec} does not exist")
    return int(spec)


def check_status(status: str | None) -> None:
    if status is not None and status not in {s.value for s in CheckStatus}:
        raise ConfigError(f"--status: one of active, inactive, error, pending; got {status!r}")


async def runs(settings: Settings, limit: int) -> list[dict[str, Any]]:
    async with open_database(settings) as engine, engine.connect() as conn:
        return await listing.recent_runs(conn, limit)


async def results(
    settings: Settings,
    *,
    run: str | None = None,
    app_id: str | None = None,
    user_id: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Checks of one run (the latest unless `run` names one); with a time window and no
    run, the checks of every run answered in that window."""
    check_status(status)
    async with open_database(settings) as engine:
        run_id: int | None = None
        if run is not None or (since is None and until is None):
            async with engine.connect() as conn:
                run_id = await resolve_run(conn, run)
        async for row in checks.stream_checks(
            engine,
            run_id=run_id,
            app_id=app_id,
            user_id=user_id,
            status=status,
            since=since,
            until=until,
        ):
            yield row


async def history(settings: Settings, app_id: str, user_id: str) -> AsyncIterator[dict[str, Any]]:
    async with open_database(settings) as engine:
        async for row in checks.stream_history(engine, app_id, user_id):
            yield row


async def resolve_changes(
    settings: Settings, run: str | None, since: str | None
) -> tuple[int, int | None]:
    """(run compared, base run): the base is the run before by default, the run `since`
    names, or the last run that had started at the time `since` gives."""
    async with open_database(settings) as engine, engine.connect() as conn:
        run_id = await resolve_run(conn, run)
        if since is None:
            return run_id, await listing.previous_run_id(conn, run_id)
        if since.strip().isdigit():
            return run_id, await resolve_run(conn, since.strip())
        return run_id, await listing.run_started_by(conn, parse_time(since, option="--since"))


async def changes(
    settings: Settings, run_id: int, base_run_id: int | None
) -> AsyncIterator[dict[str, Any]]:
    async with open_database(settings) as engine:
        async for row in change_store.stream_changes(engine, run_id, base_run_id):
            yield row


@dataclass
class Report:
    run_id: int
    previous_run_id: int | None
    rows: list[dict[str, Any]]
    open_violations: list[dict[str, Any]] = field(default_factory=list)  # after the run
    open_total: int = 0


@dataclass
class HtmlData:
    """What the HTML report shows (audit_job.html_report draws it); built by `html_data`."""

    generated_at: datetime
    run_id: int
    previous_run_id: int | None
    per_app: list[dict[str, Any]]
    run: dict[str, Any]
    series_runs: list[tuple[int, datetime]]
    series: dict[str, list[float | None]]  # app -> active % per series run (None: no answer)
    changes: list[dict[str, Any]] = field(default_factory=list)
    changes_truncated: bool = False
    open_violations: list[dict[str, Any]] = field(default_factory=list)
    open_total: int = 0
    newly_seen: int = 0
    digests: dict[int, str] = field(default_factory=dict)  # run id -> hash-chain digest


def report_rows(
    run_id: int,
    previous_run_id: int | None,
    now: dict[str, dict[str, int]],
    before: dict[str, dict[str, int]],
    violations: dict[str, dict[str, int]] | None = None,
) -> list[dict[str, Any]]:
    """Per-app rows of a run against the run before (pure, for the CLI and the HTML);
    `violations`: per app, those open after the run, opened and resolved by it."""
    rows = []
    for app_id in sorted(now):
        counts, prior = now[app_id], before.get(app_id)
        judged = (violations or {}).get(app_id, {})
        pct, prior_pct = active_pct(counts), active_pct(prior)
        rows.append(
            {
                "run_id": run_id,
                "previous_run_id": previous_run_id,
                "app_id": app_id,
                "total": sum(counts.values()),
                **{s.value: counts[s.value] for s in CheckStatus if s != CheckStatus.PENDING},
                "pending": counts[CheckStatus.PENDING.value],
                "active_pct": pct,
                "previous_active_pct": prior_pct,
                "change_pct": (
                    round(pct - prior_pct, 1) if pct is not None and prior_pct is not None else None
                ),
                "active_change": counts["active"] - prior["active"] if prior else None,
                "violations_open": judged.get("open", 0),
                "violations_opened": judged.get("opened", 0),
                "violations_resolved": judged.get("resolved", 0),
            }
        )
    return rows


async def report_of(conn: AsyncConnection, run: str | int | None) -> Report:
    run_id = await resolve_run(conn, run)
    previous = await listing.previous_run_id(conn, run_id)
    counts = await checks.app_status_counts(conn, [run_id] + ([previous] if previous else []))
    before = counts.get(previous, {}) if previous else {}
    judged = await violation_reads.per_app_of_run(conn, run_id)
    still_open = await violation_reads.open_after_run(conn, run_id, VIOLATION_LIST_LIMIT)
    return Report(
        run_id,
        previous,
        report_rows(run_id, previous, counts[run_id], before, judged),
        still_open,
        sum(per_app["open"] for per_app in judged.values()),
    )


async def report(settings: Settings, run: str | int | None = None) -> Report:
    async with open_database(settings) as engine, engine.connect() as conn:
        return await report_of(conn, run)


async def html_data(
    settings: Settings, run: str | None = None, *, recent_runs: int = 30, max_changes: int = 200
) -> HtmlData:
    # Only the HTML report reads run digests: the listing commands skip their import.
    from audit_job.store import evidence as evidence_store

    async with open_database(settings) as engine:
        async with engine.connect() as conn:
            rep = await report_of(conn, run)
            ids = await listing.real_run_ids(conn, recent_runs, rep.run_id)
            counts = await checks.app_status_counts(conn, ids)
            times = await listing.run_times(conn, ids)
            (run_row,) = await listing.recent_runs(conn, 1, rep.run_id)
            digests = await evidence_store.run_digests(conn, ids)
        apps = sorted({app for per_app in counts.values() for app in per_app})
        series = {app: [active_pct(counts[i].get(app)) for i in ids] for app in apps}
        flips: list[dict[str, Any]] = []
        truncated, newly_seen = False, 0
        rows = change_store.stream_changes(engine, rep.run_id, rep.previous_run_id, page=500)
        async with contextlib.aclosing(rows):
            async for row in rows:
                if row["change"] == store.NEWLY_SEEN:
                    newly_seen += 1  # a first run would list every pair: count them
                elif len(flips) < max_changes:
                    flips.append(row)
                else:
                    truncated = True
    return HtmlData(
        generated_at=utcnow(),
        run_id=rep.run_id,
        previous_run_id=rep.previous_run_id,
        per_app=rep.rows,
        run=run_row,
        series_runs=[(i, times[i]) for i in ids],
        series=series,
        changes=flips,
        changes_truncated=truncated,
        open_violations=rep.open_violations,
        open_total=rep.open_total,
        newly_seen=newly_seen,
        digests=digests,
    )
