"""Flip events: `session.activated` / `session.deactivated` when a batch's answer differs
from the pair's previous conclusive answer (its session_state row before the batch's
upsert). Appended in the batch writer's transaction (store/outbox.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.models import EventType
from audit_job.store import batchvalues
from audit_job.store.bulk import sqlite_time
from audit_job.store.dialect import EVENT_APPEND_LOCK, lock_event_appends
from audit_job.store.events import PAIR_CHUNK, Conclusive, NewEvent, append, iso, latest_per_pair
from audit_job.store.tables import session_state
from audit_job.store.types import utcnow

# A flip: the batch's answer against the pair's session_state row before the batch's upsert,
# when the answer is not older than that row (an older answer, from a resumed run finishing
# late, does not move session_state either). No row yet: the pair's first answer, no event.
_FLIP_COLUMNS = (
    ("app_id", "text"),
    ("user_id", "text"),
    ("active", "bool"),
    ("checked_at", "time"),
    ("run_id", "int"),
)
_flip_sql: dict[str, Any] = {}


def _flips_statement(dialect: str) -> Any:
    if dialect not in _flip_sql:
        iso = lambda expr: batchvalues.iso_text(dialect, expr)  # noqa: E731
        payload = batchvalues.json_object(
            dialect,
            [
                ("active", "b.active", "bool"),
                ("checked_at", iso("b.checked_at"), "text"),
                ("previous_active", "s.active", "bool"),
                ("previous_checked_at", iso("s.checked_at"), "text"),
                ("previous_since", iso("s.changed_at"), "text"),
                ("previous_run_id", "s.run_id", "int"),
            ],
        )
        batch = batchvalues.relation(dialect, "b", _FLIP_COLUMNS)
        if dialect == "postgresql":
            # The append lock rides in the statement (one round trip fewer per batch): the
            # joined rows, hence the ids, exist only once the CTE has run. And a LATERAL
            # probe per answer: a plain join let the planner hash all of session_state.
            lock = f"WITH l AS MATERIALIZED (SELECT pg_advisory_xact_lock({EVENT_APPEND_LOCK}))"
            source = (
                f"FROM l CROSS JOIN {batch} CROSS JOIN LATERAL ("
                "SELECT active, checked_at, changed_at, run_id FROM session_state "
                "WHERE app_id = b.app_id AND user_id = b.user_id LIMIT 1) AS s"
            )
        else:
            lock = ""
            source = (
                f"FROM {batch} JOIN session_state AS s "
                "ON s.app_id = b.app_id AND s.user_id = b.user_id"
            )
        _flip_sql[dialect] = text(
            f"""{lock}
INSERT INTO audit_event (type, created_at, run_id, app_id, user_id, payload)
SELECT CASE WHEN b.active THEN 'session.activated' ELSE 'session.deactivated' END,
       :now, b.run_id, b.app_id, b.user_id, {payload}
{source}
WHERE s.active <> b.active AND b.checked_at >= s.checked_at
ORDER BY b.app_id, b.user_id
"""
        )
    return _flip_sql[dialect]


async def append_flips(
    conn: AsyncConnection,
    answers: Sequence[Conclusive],
    *,
    now: datetime | None = None,
    locked: bool = False,
) -> int:
    """`session.activated` / `session.deactivated` for the batch's answers that flip the
    pair's previous conclusive answer: one INSERT .. SELECT joining the batch with
    session_state. Call it BEFORE the batch's session_state upsert. Returns the number of
    events (-1 where the driver does not say)."""
    rows = latest_per_pair(answers)
    if not rows:
        return 0
    created = now or utcnow()
    dialect = conn.dialect.name
    if dialect == "postgresql":  # the statement takes the append lock itself
        values = [(r.app_id, r.user_id, r.active, r.checked_at, r.run_id) for r in rows]
        params = batchvalues.params(dialect, "b", _FLIP_COLUMNS, values)
        result = await conn.execute(_flips_statement(dialect), {"now": created, **params})
        return result.rowcount
    if dialect == "sqlite":  # one writer at a time: nothing to lock
        batch = orjson.dumps(
            [(r.app_id, r.user_id, r.active, sqlite_time(r.checked_at), r.run_id) for r in rows]
        ).decode()
        result = await conn.execute(
            _flips_statement(dialect), {"now": sqlite_time(created), "b_rows": batch}
        )
        return result.rowcount
    if not locked:
        await lock_event_appends(conn)
    return await _append_flips_portable(conn, rows, created)


async def _append_flips_portable(
    conn: AsyncConnection, rows: list[Conclusive], created: datetime
) -> int:
    """The same rule through Core (other dialects): read the pairs' states, compare here."""
    events: list[NewEvent] = []
    ordered = sorted(rows, key=lambda r: (r.app_id, r.user_id))
    for start in range(0, len(ordered), PAIR_CHUNK):
        chunk = ordered[start : start + PAIR_CHUNK]
        states = {
            (s.app_id, s.user_id): s
            for s in await conn.execute(
                select(session_state).where(
                    tuple_(session_state.c.app_id, session_state.c.user_id).in_(
                        [(r.app_id, r.user_id) for r in chunk]
                    )
                )
            )
        }
        for r in chunk:
            state = states.get((r.app_id, r.user_id))
            if state is None or state.active == r.active or r.checked_at < state.checked_at:
                continue
            events.append(
                flip_event(r, state.active, state.checked_at, state.changed_at, state.run_id)
            )
    return await append(conn, events, now=created, locked=True)


def flip_event(
    answer: Conclusive,
    previous_active: bool,
    previous_checked_at: datetime,
    previous_since: datetime,
    previous_run_id: int,
) -> NewEvent:
    kind = EventType.SESSION_ACTIVATED if answer.active else EventType.SESSION_DEACTIVATED
    data = {
        "active": answer.active,
        "checked_at": iso(answer.checked_at),
        "previous_active": previous_active,
        "previous_checked_at": iso(previous_checked_at),
        "previous_since": iso(previous_since),
        "previous_run_id": previous_run_id,
    }
    return NewEvent(kind.value, answer.run_id, answer.app_id, answer.user_id, data)
