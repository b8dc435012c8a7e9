"""Where the event feed is fed: one call per committed cause, inside its transaction.

- `record_answers`: a batch writer, for the rows the batch turned final, BEFORE the
  batch's session_state upsert (the flips compare with the state before it).
- `record_run_end`: a run's finish, in the transaction that writes its final status.
- `record_events`: anything else (schedule slots: `events.slot_missed`/`slot_skipped`).

Every append takes the feed's append lock (dialect.lock_event_appends) before its first
id, so ids commit in id order.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.store import events, flips, violations
from audit_job.store.types import utcnow
from audit_job.store.violations import JudgedAnswer


async def record_answers(
    conn: AsyncConnection,
    answers: Sequence[JudgedAnswer],
    *,
    now: datetime | None = None,
    maybe_open: bool = True,
    resolution: str = violations.RESOLVED_BY_CHECK,
) -> int:
    """Flip events, then opened and resolved violations with their events, for a batch's
    final answers (error answers are skipped). Returns how many events were appended
    (flip counts are the driver's rowcount). `maybe_open`, `resolution`: see
    violations.judge."""
    conclusive = [a for a in answers if a.active is not None]
    if not conclusive:
        return 0
    now = now or utcnow()
    appended = max(0, await flips.append_flips(conn, conclusive, now=now))
    judged = await violations.judge(conn, conclusive, maybe_open=maybe_open, resolution=resolution)
    appended += await events.append(conn, judged, now=now)
    return appended


async def record_run_end(conn: AsyncConnection, event: events.NewEvent) -> int:
    """`run.finished` / `run.failed` (built by events.run_ended)."""
    return await events.append(conn, [event])


async def record_events(conn: AsyncConnection, new: Sequence[events.NewEvent]) -> int:
    return await events.append(conn, new)
