"""The re-check after kicks: check-session-status for each kicked pair, recorded as a run
of its own (trigger `remediation`) through the write path every answer takes: its
`session_check` rows and `session_state`, then the outbox (flip events, violations opened
and resolved, their events). A violation is resolved by this answer and by nothing else:
the kick itself never closes one. Violations resolved here say `resolution = 'recheck'`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_job.client import AuthingClient
from audit_job.config import LoadedConfig
from audit_job.errors import ApiError
from audit_job.limiter import AdaptiveRateLimiter
from audit_job.models import CheckResult, CheckStatus, Pair, RunStatus, RunTrigger
from audit_job.policy import PolicySet
from audit_job.store import remediation as store
from audit_job.store import results, snapshot
from audit_job.store import runs as run_store
from audit_job.store.tables import audit_target, session_check

RESOLVED_BY_RECHECK = "recheck"


async def recheck(
    engine: AsyncEngine,
    loaded: LoadedConfig,
    plan_id: str,
    todo: Sequence[store.Step],
    limiter: AdaptiveRateLimiter,
) -> tuple[int, dict[int, bool | None]]:
    """(run id, step id -> active after the kick, None when the check ended in error)."""
    pairs = sorted({(s.app_id, s.user_id) for s in todo})
    async with engine.begin() as conn:
        run_id = await run_store.create_run(
            conn, trigger=RunTrigger.REMEDIATION.value, filters={"plan": plan_id}
        )
        own = await _own_expectations(conn, pairs)
        await snapshot.add_snapshot_rows(conn, run_id, [(a, u, own.get((a, u))) for a, u in pairs])
        await snapshot.finish_snapshot(conn, run_id)
        ids = {
            (row.app_id, row.user_id): row.id
            for row in await conn.execute(
                select(session_check.c.id, session_check.c.app_id, session_check.c.user_id).where(
                    session_check.c.run_id == run_id
                )
            )
        }
    client = AuthingClient.from_config(loaded, limiter=limiter)
    answers: dict[tuple[str, str], CheckResult] = {}
    error: ApiError | None = None
    async with client:
        try:
            found = await asyncio.gather(*(client.check(Pair(a, u)) for a, u in pairs))
            answers = dict(zip(pairs, found, strict=True))
        except ApiError as exc:  # credentials or TLS refused: nothing resolves
            error = exc
    outcome: dict[int, bool | None] = {}
    async with engine.begin() as conn:
        if answers:
            batch = [(ids[p], p[0], p[1], r, own.get(p)) for p, r in answers.items()]
            judging = results.Judging(
                policies=PolicySet(loaded.settings.policy), resolution=RESOLVED_BY_RECHECK
            )
            await results.write_results(conn, run_id, batch, judging=judging)
        for step in todo:
            result = answers.get((step.app_id, step.user_id))
            active = None if result is None else result.active
            at = result.checked_at if result is not None else None
            if result is not None and at is not None:
                await store.mark_rechecked(conn, step.id, active, at, run_id)
            outcome[step.id] = active
        counts = await run_store.status_counts(conn, run_id)
        status = RunStatus.FAILED if error else RunStatus.SUCCEEDED
        if not error and counts[CheckStatus.ERROR.value]:
            status = RunStatus.COMPLETED_WITH_ERRORS
        await run_store.finish_run(conn, run_id, status, str(error) if error else None, counts)
    if error is not None:
        raise error
    return run_id, outcome


async def _own_expectations(
    conn: AsyncConnection, pairs: list[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """Each pair's own expectation (audit_target.expect); policies decide the rest."""
    own: dict[tuple[str, str], str] = {}
    for start in range(0, len(pairs), 400):
        chunk = pairs[start : start + 400]
        stmt = select(audit_target.c.app_id, audit_target.c.user_id, audit_target.c.expect).where(
            audit_target.c.app_id.in_({a for a, _ in chunk}),
            audit_target.c.user_id.in_({u for _, u in chunk}),
        )
        own.update({(r.app_id, r.user_id): r.expect for r in await conn.execute(stmt)})
    return own
