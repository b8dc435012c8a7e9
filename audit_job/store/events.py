"""The event feed (`audit_event`): append inside the caller's transaction, read in id order.

Events are a transactional outbox: each is inserted by the transaction that commits what
it reports (a batch of answers, a run's end, a schedule slot), so an event exists exactly
when its cause was committed. Ids are taken under `dialect.lock_event_appends`, so they
commit in id order and a reader's cursor can never pass an id that commits later.

What is stored per event: the columns (id, type, created_at, run_id, app_id, user_id) and
`payload`, the JSON object of the type's details; audit_job/events/envelope.py turns a row
into what sinks receive. Times in payloads are ISO 8601 UTC with microseconds
(`2026-12-03T09:00:00.000000+00:00`), as `iso()` writes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, TypeVar

import orjson
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.models import EventType, RunStatus
from audit_job.store.dialect import lock_event_appends
from audit_job.store.tables import audit_event
from audit_job.store.types import utcnow

READ_PAGE = 1000
PAIR_CHUNK = 400  # pairs per portable IN (...) list: 800 parameters, under every limit


def iso(value: datetime | None) -> str | None:
    """A payload time: ISO 8601 in UTC, always with microseconds."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class NewEvent:
    type: str
    run_id: int | None
    app_id: str | None
    user_id: str | None
    data: Mapping[str, Any]


class EventRow(NamedTuple):
    id: int
    type: str
    created_at: datetime
    run_id: int | None
    app_id: str | None
    user_id: str | None
    payload: str  # JSON text


class Conclusive(Protocol):
    """A conclusive answer of a batch (store/violations.JudgedAnswer has these)."""

    @property
    def app_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def active(self) -> bool | None: ...
    @property
    def checked_at(self) -> datetime: ...
    @property
    def run_id(self) -> int: ...


# --- payloads of the run and schedule events ------------------------------------------------


Answer = TypeVar("Answer", bound=Conclusive)


def latest_per_pair(answers: Sequence[Answer]) -> list[Answer]:
    """Each pair's newest conclusive answer of a batch (error answers left out): where a
    batch holds a pair more than once, only its newest answer counts."""
    latest: dict[tuple[str, str], Answer] = {}
    for answer in answers:
        if answer.active is None:
            continue
        key = (answer.app_id, answer.user_id)
        seen = latest.get(key)
        if seen is None or answer.checked_at >= seen.checked_at:
            latest[key] = answer
    return list(latest.values())


def run_ended(
    *,
    run_id: int,
    status: str,
    trigger: str,
    started_at: datetime,
    finished_at: datetime,
    counts: Mapping[str, int],
    retries: int,
    throttled: int,
    message: str | None,
    open_violations: int | None = None,
) -> NewEvent:
    """`run.failed` for a failed run, `run.finished` for a succeeded or
    completed_with_errors one (an interrupted run is not over: its resume ends it)."""
    kind = EventType.RUN_FAILED if status == RunStatus.FAILED.value else EventType.RUN_FINISHED
    data = {
        "status": status,
        "trigger": trigger,
        "started_at": iso(started_at),
        "finished_at": iso(finished_at),
        "duration_seconds": round((finished_at - started_at).total_seconds(), 3),
        "total": sum(counts.values()),
        "active": counts.get("active", 0),
        "inactive": counts.get("inactive", 0),
        "error": counts.get("error", 0),
        "pending": counts.get("pending", 0),
        "retries": retries,
        "throttled": throttled,
        "open_violations": open_violations,
        "message": message,
    }
    return NewEvent(kind.value, run_id, None, None, data)


def slot_missed(
    *, run_id: int, first: datetime, last: datetime, count: int, message: str
) -> NewEvent:
    data = {
        "scheduled_for": iso(last),
        "missed_first": iso(first),
        "missed_last": iso(last),
        "missed_count": count,
        "message": message,
    }
    return NewEvent(EventType.SLOT_MISSED.value, run_id, None, None, data)


def slot_skipped(
    *, run_id: int, scheduled_for: datetime, message: str, running_run_id: int | None
) -> NewEvent:
    data = {
        "scheduled_for": iso(scheduled_for),
        "running_run_id": running_run_id,
        "message": message,
    }
    return NewEvent(EventType.SLOT_SKIPPED.value, run_id, None, None, data)


# --- appending ------------------------------------------------------------------------------


async def append(
    conn: AsyncConnection,
    events: Sequence[NewEvent],
    *,
    now: datetime | None = None,
    locked: bool = False,
) -> int:
    """Insert events in the order given (ids increase along it), in the caller's
    transaction. `locked`: the caller already called lock_event_appends in it."""
    if not events:
        return 0
    if not locked:
        await lock_event_appends(conn)
    created = now or utcnow()
    await conn.execute(
        insert(audit_event),
        [
            {
                "type": event.type,
                "created_at": created,
                "run_id": event.run_id,
                "app_id": event.app_id,
                "user_id": event.user_id,
                "payload": orjson.dumps(event.data).decode(),
            }
            for event in events
        ],
    )
    return len(events)


# --- reading --------------------------------------------------------------------------------

_COLUMNS = [
    audit_event.c.id,
    audit_event.c.type,
    audit_event.c.created_at,
    audit_event.c.run_id,
    audit_event.c.app_id,
    audit_event.c.user_id,
    audit_event.c.payload,
]


async def head(conn: AsyncConnection) -> int:
    """The newest event's id (0 when there is none). Every smaller id is committed or will
    never be (lock_event_appends), so reading up to it misses nothing."""
    return int(
        (await conn.execute(select(func.coalesce(func.max(audit_event.c.id), 0)))).scalar_one()
    )


def _window(stmt: Any, after_id: int, upto_id: int | None, types: frozenset[str] | None) -> Any:
    stmt = stmt.where(audit_event.c.id > after_id)
    if upto_id is not None:
        stmt = stmt.where(audit_event.c.id <= upto_id)
    if types is not None:
        stmt = stmt.where(audit_event.c.type.in_(sorted(types)))
    return stmt


async def read_after(
    conn: AsyncConnection,
    after_id: int,
    *,
    limit: int = READ_PAGE,
    upto_id: int | None = None,
    types: frozenset[str] | None = None,
    since: datetime | None = None,
) -> list[EventRow]:
    """Events with after_id < id <= upto_id (of `types`, created at or after `since`), in
    id order, at most `limit`."""
    stmt = _window(select(*_COLUMNS), after_id, upto_id, types)
    if since is not None:
        stmt = stmt.where(audit_event.c.created_at >= since)
    rows = await conn.execute(stmt.order_by(audit_event.c.id).limit(limit))
    return [EventRow(*row) for row in rows]


async def count_after(
    conn: AsyncConnection,
    after_id: int,
    *,
    upto_id: int | None = None,
    types: frozenset[str] | None = None,
) -> int:
    stmt = _window(select(func.count()).select_from(audit_event), after_id, upto_id, types)
    return int((await conn.execute(stmt)).scalar_one())


async def first_id_since(conn: AsyncConnection, since: datetime) -> int:
    """The cursor that starts a listing at `since`: the id before the first event
    created at or after it."""
    stmt = select(func.min(audit_event.c.id)).where(audit_event.c.created_at >= since)
    first = (await conn.execute(stmt)).scalar_one_or_none()
    return (int(first) - 1) if first is not None else await head(conn)


async def count_before(conn: AsyncConnection, *, before: datetime, upto_id: int) -> int:
    stmt = select(func.count()).select_from(audit_event)
    stmt = stmt.where(audit_event.c.created_at < before, audit_event.c.id <= upto_id)
    return int((await conn.execute(stmt)).scalar_one())


async def prune_batch(conn: AsyncConnection, *, before: datetime, upto_id: int, batch: int) -> int:
    """Delete up to `batch` events created before `before` with id <= upto_id (the caller
    passes the lowest cursor of the configured sinks, and never the newest event)."""
    ids = (
        select(audit_event.c.id)
        .where(audit_event.c.created_at < before, audit_event.c.id <= upto_id)
        .order_by(audit_event.c.id)
        .limit(batch)
    )
    picked = [row[0] for row in await conn.execute(ids)]
    if not picked:
        return 0
    await conn.execute(delete(audit_event).where(audit_event.c.id.in_(picked)))
    return len(picked)
