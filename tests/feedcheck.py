"""What the event feed must hold, worked out from the tables it reports on: shared by the
storage tests and the CLI tests of the feed."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from audit_job.store.engine import opened
from audit_job.store.tables import audit_event, audit_run, audit_violation, session_check

Pair = tuple[str, str]


async def fetch(url: str, stmt: Any) -> list[Any]:
    async with opened(url) as engine, engine.connect() as conn:
        return list((await conn.execute(stmt)).all())


async def feed(url: str) -> list[Any]:
    return await fetch(url, select(audit_event).order_by(audit_event.c.id))


def payload(event: Any) -> dict[str, Any]:
    return json.loads(event.payload)


async def answers_of(url: str, run_id: int) -> dict[Pair, bool | None]:
    rows = await fetch(url, select(session_check).where(session_check.c.run_id == run_id))
    return {(r.app_id, r.user_id): r.active for r in rows}


async def implied_events(url: str, run_ids: list[int]) -> list[tuple[Any, ...]]:
    """What the tables say the feed must hold for these runs (the first one's flips are
    taken against nothing before it): flips against the previous conclusive answer, each
    violation's opening and resolution, each ended run with its totals."""
    implied: list[tuple[Any, ...]] = []
    previous: dict[Pair, bool] = {}
    for run_id in run_ids:
        for pair, active in sorted((await answers_of(url, run_id)).items()):
            if active is None:
                continue
            if pair in previous and previous[pair] != active:
                kind = "session.activated" if active else "session.deactivated"
                implied.append((kind, run_id, *pair, None))
            previous[pair] = active
        (run,) = await fetch(url, select(audit_run).where(audit_run.c.id == run_id))
        totals = (run.total, run.active, run.inactive, run.failed)
        implied.append(("run.finished", run_id, None, None, totals))
    for v in await fetch(url, select(audit_violation)):
        implied.append(("violation.opened", v.opened_run_id, v.app_id, v.user_id, v.id))
        if v.resolved_run_id is not None:
            implied.append(("violation.resolved", v.resolved_run_id, v.app_id, v.user_id, v.id))
    return sorted(implied, key=repr)


def as_implied(event: Any) -> tuple[Any, ...]:
    """An event row in the terms of implied_events."""
    data = payload(event)
    extra: Any = None
    if event.type.startswith("violation."):
        extra = data["violation_id"]
    elif event.type.startswith("run."):
        extra = (data["total"], data["active"], data["inactive"], data["error"])
    return (event.type, event.run_id, event.app_id, event.user_id, extra)
