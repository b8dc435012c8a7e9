"""Violations (`audit_violation`): a pair whose answer contradicts its expected state.

`judge()` runs inside a batch writer's transaction with the batch's conclusive answers and
each pair's effective expectation (audit_job/policy.py), and returns the events to append:

- an answer that contradicts its expectation opens a violation, unless the pair already
  has an open one for the same expectation (it stays open, across runs, silently);
- an open violation is resolved (`resolution = 'check'`) by an answer that no longer
  contradicts it: the state changed, or the expectation did (`any` included);
- an answer older than the pair's open violation or than its session_state row (a resumed
  run finishing late) changes nothing; an `error` answer (active None) changes nothing.

Cost: one statement per batch (the open violations of the batch's pairs) when nothing
contradicts and nothing is open; a few more only for the pairs that open or resolve.
It must see each answer once: the writer calls it for the rows its batch actually turned
final (`UPDATE .. WHERE status = 'pending'`), so a replayed batch calls it with none.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.models import EventType, Expect, Severity
from audit_job.policy import contradicts
from audit_job.store import batchvalues
from audit_job.store.dialect import insert_ignore
from audit_job.store.events import PAIR_CHUNK, NewEvent, iso, latest_per_pair
from audit_job.store.tables import audit_violation, session_state

RESOLVED_BY_CHECK = "check"
VIOLATION_COLUMNS = [
    "id",
    "app_id",
    "user_id",
    "expected",
    "observed",
    "severity",
    "source",
    "opened_run_id",
    "opened_at",
    "resolved_run_id",
    "resolved_at",
    "resolution",
]
SEVERITY_RANK = {s.value: rank for rank, s in enumerate(Severity)}


class JudgedAnswer(NamedTuple):
    """A final answer of a batch with the pair's effective expectation."""

    app_id: str
    user_id: str
    active: bool | None  # None: an `error` answer (ignored)
    checked_at: datetime
    run_id: int
    expect: str = Expect.ANY.value
    severity: str = Severity.WARNING.value
    source: str = "default"


class OpenViolation(NamedTuple):
    id: int
    app_id: str
    user_id: str
    expected: str
    observed: str
    severity: str
    source: str
    opened_run_id: int
    opened_at: datetime


_OPEN_COLUMNS = [audit_violation.c[name] for name in OpenViolation._fields]
_PAIR_COLUMNS = (("app_id", "text"), ("user_id", "text"))
_PAIR_TIME_COLUMNS = (("app_id", "text"), ("user_id", "text"), ("checked_at", "time"))
_sql: dict[tuple[str, str], Any] = {}


def _statement(dialect: str, name: str) -> Any:
    key = (dialect, name)
    if key not in _sql:
        if name == "open":
            columns = ", ".join(f"v.{c}" for c in OpenViolation._fields)
            batch = batchvalues.relation(dialect, "b", _PAIR_COLUMNS)
            probe = (  # one unique-index probe per pair, whatever the planner thinks
                f"SELECT {', '.join(OpenViolation._fields)} FROM audit_violation "
                "WHERE app_id = b.app_id AND user_id = b.user_id AND is_open IS NOT NULL"
            )
            sql = (
                f"SELECT {columns} FROM {batch} CROSS JOIN LATERAL ({probe} LIMIT 1) AS v"
                if dialect == "postgresql"
                else f"SELECT {columns} FROM {batch} JOIN audit_violation AS v "
                "ON v.app_id = b.app_id AND v.user_id = b.user_id AND v.is_open IS NOT NULL"
            )
            _sql[key] = text(sql).columns(*_OPEN_COLUMNS)
        else:  # stale: pairs whose session_state is newer than the batch's answer
            sql = (
                "SELECT b.app_id, b.user_id "
                f"FROM {batchvalues.relation(dialect, 'b', _PAIR_TIME_COLUMNS)} "
                "WHERE EXISTS (SELECT 1 FROM session_state AS s WHERE s.app_id = b.app_id "
                "AND s.user_id = b.user_id AND s.checked_at > b.checked_at)"
            )
            _sql[key] = text(sql)
    return _sql[key]


async def open_for(
    conn: AsyncConnection, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], OpenViolation]:
    """The open violations of these pairs, by pair."""
    if not pairs:
        return {}
    dialect = conn.dialect.name
    found: dict[tuple[str, str], OpenViolation] = {}
    if dialect in batchvalues.SUPPORTED:
        params = batchvalues.params(dialect, "b", _PAIR_COLUMNS, pairs)
        for row in await conn.execute(_statement(dialect, "open"), params):
            found[(row.app_id, row.user_id)] = OpenViolation(*row)
        return found
    for start in range(0, len(pairs), PAIR_CHUNK):
        stmt = select(*_OPEN_COLUMNS).where(
            audit_violation.c.is_open.is_not(None),
            tuple_(audit_violation.c.app_id, audit_violation.c.user_id).in_(
                list(pairs[start : start + PAIR_CHUNK])
            ),
        )
        for row in await conn.execute(stmt):
            found[(row.app_id, row.user_id)] = OpenViolation(*row)
    return found


async def _stale(conn: AsyncConnection, answers: Sequence[JudgedAnswer]) -> set[tuple[str, str]]:
    """Pairs whose latest answer (session_state) is newer than the batch's."""
    dialect = conn.dialect.name
    if dialect in batchvalues.SUPPORTED:
        rows = [(a.app_id, a.user_id, a.checked_at) for a in answers]
        params = batchvalues.params(dialect, "b", _PAIR_TIME_COLUMNS, rows)
        return {(r[0], r[1]) for r in await conn.execute(_statement(dialect, "stale"), params)}
    stale: set[tuple[str, str]] = set()
    by_pair = {(a.app_id, a.user_id): a.checked_at for a in answers}
    keys = list(by_pair)
    for start in range(0, len(keys), PAIR_CHUNK):
        stmt = select(session_state.c.app_id, session_state.c.user_id, session_state.c.checked_at)
        stmt = stmt.where(
            tuple_(session_state.c.app_id, session_state.c.user_id).in_(
                keys[start : start + PAIR_CHUNK]
            )
        )
        for app_id, user_id, checked_at in await conn.execute(stmt):
            if checked_at > by_pair[(app_id, user_id)]:
                stale.add((app_id, user_id))
    return stale


def _observed(active: bool) -> str:
    return Expect.ACTIVE.value if active else Expect.INACTIVE.value


_RESOLVE = (
    update(audit_violation)
    .where(audit_violation.c.id == bindparam("b_id"), audit_violation.c.is_open.is_not(None))
    .values(
        is_open=None,
        resolved_at=bindparam("b_at"),
        resolved_run_id=bindparam("b_run"),
        resolution=bindparam("b_resolution"),
    )
)


async def judge(
    conn: AsyncConnection,
    answers: Sequence[JudgedAnswer],
    *,
    maybe_open: bool = True,
    resolution: str = RESOLVED_BY_CHECK,
) -> list[NewEvent]:
    """Open and resolve violations for a batch (module docstring); the events to append,
    resolutions first, each group in pair order.

    `maybe_open=False` says that none of these pairs can have an open violation (the run
    found none open when it started: a pair is answered once per run, so none of its
    pairs can have gained one since); a batch with no contradiction then costs nothing.
    `resolution`: what resolved them (`check`, or `recheck` after a kick)."""
    rows = latest_per_pair(answers)
    if not rows:
        return []
    if not maybe_open and not any(contradicts(a.expect, bool(a.active)) for a in rows):
        return []
    current = await open_for(conn, [(a.app_id, a.user_id) for a in rows])
    to_resolve: list[tuple[OpenViolation, JudgedAnswer]] = []
    to_open: list[JudgedAnswer] = []
    for answer in rows:
        wrong = contradicts(answer.expect, bool(answer.active))
        violation = current.get((answer.app_id, answer.user_id))
        if violation is not None:
            if answer.checked_at < violation.opened_at:
                continue
            if wrong and violation.expected == answer.expect:
                continue  # the same contradiction, still open
            to_resolve.append((violation, answer))
        if wrong:
            to_open.append(answer)
    if not to_resolve and not to_open:
        return []
    stale = await _stale(conn, [a for _, a in to_resolve] + to_open)
    if stale:
        to_resolve = [(v, a) for v, a in to_resolve if (a.app_id, a.user_id) not in stale]
        to_open = [a for a in to_open if (a.app_id, a.user_id) not in stale]
    events: list[NewEvent] = []
    if to_resolve:
        to_resolve.sort(key=lambda item: (item[1].app_id, item[1].user_id))
        await conn.execute(
            _RESOLVE,
            [
                {"b_id": v.id, "b_at": a.checked_at, "b_run": a.run_id, "b_resolution": resolution}
                for v, a in to_resolve
            ],
        )
        events += [_resolved_event(v, a, resolution) for v, a in to_resolve]
    if to_open:
        to_open.sort(key=lambda a: (a.app_id, a.user_id))
        events += await _open(conn, to_open)
    return events


async def _open(conn: AsyncConnection, answers: list[JudgedAnswer]) -> list[NewEvent]:
    values = [
        {
            "app_id": a.app_id,
            "user_id": a.user_id,
            "expected": a.expect,
            "observed": _observed(bool(a.active)),
            "severity": a.severity,
            "source": a.source[:96],
            "opened_run_id": a.run_id,
            "opened_at": a.checked_at,
            "is_open": True,
        }
        for a in answers
    ]
    dialect = conn.dialect.name
    # ON CONFLICT DO NOTHING: a pair that another transaction opened meanwhile keeps that one.
    stmt = insert_ignore(audit_violation, dialect, ["app_id", "user_id", "is_open"])
    if dialect in batchvalues.SUPPORTED:
        result = await conn.execute(
            stmt.returning(
                audit_violation.c.id, audit_violation.c.app_id, audit_violation.c.user_id
            ),
            values,
        )
        ids = {(r.app_id, r.user_id): r.id for r in result}
    else:
        await conn.execute(stmt, values)
        opened = await open_for(conn, [(a.app_id, a.user_id) for a in answers])
        mine = {(a.app_id, a.user_id): a for a in answers}
        ids = {  # ours, not one that another transaction opened meanwhile
            pair: v.id
            for pair, v in opened.items()
            if v.opened_run_id == mine[pair].run_id and v.opened_at == mine[pair].checked_at
        }
    return [
        _opened_event(ids[(a.app_id, a.user_id)], a)
        for a in answers
        if (a.app_id, a.user_id) in ids
    ]


def _opened_event(violation_id: int, answer: JudgedAnswer) -> NewEvent:
    data = {
        "violation_id": violation_id,
        "expected": answer.expect,
        "observed": _observed(bool(answer.active)),
        "severity": answer.severity,
        "source": answer.source,
        "opened_at": iso(answer.checked_at),
    }
    return NewEvent(
        EventType.VIOLATION_OPENED.value, answer.run_id, answer.app_id, answer.user_id, data
    )


def _resolved_event(
    violation: OpenViolation, answer: JudgedAnswer, resolution: str = RESOLVED_BY_CHECK
) -> NewEvent:
    data = {
        "violation_id": violation.id,
        "expected": violation.expected,
        "observed": violation.observed,
        "severity": violation.severity,
        "source": violation.source,
        "opened_at": iso(violation.opened_at),
        "opened_run_id": violation.opened_run_id,
        "resolved_at": iso(answer.checked_at),
        "resolution": resolution,
        "active": answer.active,
        "expect": answer.expect,
    }
    return NewEvent(
        EventType.VIOLATION_RESOLVED.value, answer.run_id, answer.app_id, answer.user_id, data
    )
