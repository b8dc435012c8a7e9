"""`audit-job kick --apply` and `--resume`: carry out a plan, one kick-users call at a time
per user, every step in the `remediation` table before and after its call.

Per call: the intent (`sent`, who and when) is committed, the call made (retried only as
the retry policy allows), then the outcome (`kicked` or `failed`, request id, message) is
committed with its `remediation.applied` / `remediation.failed` events. A row found `sent`
on resume belongs to a process that died around its call: its pairs are checked first,
and only those still active are sent again, so no kick lands twice for one violation.
After the calls, the kicked pairs are re-checked (commands/recheck.py); that re-check, not
the kick, resolves their violations.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import uuid
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.client import AuthingClient
from audit_job.client.directory import DirectoryClient
from audit_job.commands.database import open_database
from audit_job.commands.kick_plan import Call, Plan, calls_of
from audit_job.commands.recheck import recheck
from audit_job.config import LoadedConfig
from audit_job.errors import NotFound
from audit_job.limiter import AdaptiveRateLimiter
from audit_job.models import EventType, Pair
from audit_job.store import outbox
from audit_job.store import remediation as store
from audit_job.store.events import NewEvent
from audit_job.store.runs import owner_tag
from audit_job.store.tables import audit_violation

log = logging.getLogger(__name__)
KICKS_AT_ONCE = 8  # users kicked concurrently (the limiter paces them all)


@dataclass
class ApplySummary:
    plan_id: str
    calls: int = 0
    kicked: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # user -> why
    confirmed: int = 0  # in-doubt pairs found gone on resume, not sent again
    in_doubt: int = 0  # in-doubt pairs whose check failed: left for the next --resume
    recheck_run_id: int | None = None
    still_active: list[tuple[str, str]] = field(default_factory=list)
    resolved: int = 0

    @property
    def outcomes(self) -> dict[str, int]:
        return {"applied": len(self.kicked), "failed": len(self.failed)}


def _os_user() -> str:
    try:
        return getpass.getuser()[:128]
    except Exception:  # no login name (a container without a passwd entry)
        return "unknown"


async def apply_plan(loaded: LoadedConfig, plan: Plan) -> ApplySummary:
    """Write the plan, then carry it out."""
    plan_id = uuid.uuid4().hex
    async with open_database(loaded.settings) as engine:
        async with engine.begin() as conn:
            await store.write_plan(conn, plan_id, plan.items, owner_tag(), _os_user())
        log.info(
            "kick plan %s: %d users, %d pairs",
            plan_id,
            len(plan.users),
            len(plan.items),
            extra={"event": "remediation_planned"},
        )
        return await execute(engine, loaded, plan_id)


async def resume(loaded: LoadedConfig, plan_id: str | None = None) -> list[ApplySummary]:
    """Finish the given plan, or every unfinished one."""
    async with open_database(loaded.settings) as engine:
        async with engine.connect() as conn:
            plans = await store.unfinished_plans(conn)
            if plan_id is not None:
                if not await store.steps(conn, plan_id):
                    raise NotFound(f"kick --resume {plan_id}: no such plan")
                plans = [plan_id] if plan_id in plans else []
        return [await execute(engine, loaded, p) for p in plans]


async def execute(engine: AsyncEngine, loaded: LoadedConfig, plan_id: str) -> ApplySummary:
    summary = ApplySummary(plan_id)
    async with engine.connect() as conn:
        steps = await store.steps(conn, plan_id)
    limiter = AdaptiveRateLimiter(loaded.settings.audit.rate_per_second)
    pending = [s for s in steps if s.state in store.UNFINISHED]
    if pending:
        actor, os_user = owner_tag(), _os_user()
        by_pair = {(s.app_id, s.user_id): s for s in pending}
        gate = asyncio.Semaphore(KICKS_AT_ONCE)
        async with (
            DirectoryClient(loaded, limiter) as api,
            AuthingClient.from_config(loaded, limiter=limiter) as checker,
        ):

            async def one(call: Call) -> None:
                async with gate:
                    mine = [by_pair[(app, call.user_id)] for app in call.app_ids]
                    await _carry_out(engine, api, checker, mine, summary, actor, os_user)

            calls = calls_of([(s.app_id, s.user_id, s.violation_id) for s in pending])
            await asyncio.gather(*(one(call) for call in calls))
    async with engine.connect() as conn:
        steps = await store.steps(conn, plan_id)
    todo = [s for s in steps if s.state == store.KICKED and s.recheck_active is None]
    if todo:
        run_id, after = await recheck(engine, loaded, plan_id, todo, limiter)
        summary.recheck_run_id = run_id
        summary.still_active = [(s.app_id, s.user_id) for s in todo if after.get(s.id)]
        summary.resolved = await _resolved(engine, [s.violation_id for s in todo])
    return summary


async def _carry_out(
    engine: AsyncEngine,
    api: DirectoryClient,
    checker: AuthingClient,
    steps: list[store.Step],
    summary: ApplySummary,
    actor: str,
    os_user: str,
) -> None:
    user = steps[0].user_id
    send = [s for s in steps if s.state == store.PLANNED]
    for step in (s for s in steps if s.state == store.SENT):
        result = await checker.check(Pair(step.app_id, step.user_id))
        if result.active is False:  # gone: the dead process's kick landed (or it ended)
            async with engine.begin() as conn:
                await store.mark_outcome(
                    conn,
                    [step.id],
                    store.KICKED,
                    attempts=0,
                    request_id=result.request_id,
                    message="interrupted apply: the session was found gone; not sent again",
                )
                await outbox.record_events(conn, [_event(step, True, summary.plan_id, actor)])
            summary.confirmed += 1
            summary.kicked.add(user)
        elif result.active is True:
            send.append(step)
        else:
            summary.in_doubt += 1  # unknown: sending could kick twice, waiting could not
    if not send:
        return
    async with engine.begin() as conn:  # the intent, before the call
        await store.mark_sent(conn, [s.id for s in send], actor, os_user)
    reply = await api.kick(user, [s.app_id for s in send])
    summary.calls += 1
    state = store.KICKED if reply.ok else store.FAILED
    message = None if reply.ok else reply.describe()
    async with engine.begin() as conn:  # the outcome, after it
        await store.mark_outcome(
            conn,
            [s.id for s in send],
            state,
            attempts=reply.attempts,
            request_id=reply.request_id,
            message=message,
        )
        await outbox.record_events(
            conn,
            [_event(s, reply.ok, summary.plan_id, actor, reply.request_id, message) for s in send],
        )
    if reply.ok:
        summary.kicked.add(user)
    else:
        summary.failed[user] = message or "failed"
        log.warning(
            "kick-users failed for %s: %s", user, message, extra={"event": "remediation_failed"}
        )


def _event(
    step: store.Step,
    ok: bool,
    plan_id: str,
    actor: str,
    request_id: str | None = None,
    message: str | None = None,
) -> NewEvent:
    data = {
        "remediation_id": step.id,
        "plan_id": plan_id,
        "violation_id": step.violation_id,
        "request_id": request_id,
        "actor": actor,
    }
    if not ok:
        data["message"] = message
    kind = EventType.REMEDIATION_APPLIED if ok else EventType.REMEDIATION_FAILED
    return NewEvent(kind.value, None, step.app_id, step.user_id, data)


async def _resolved(engine: AsyncEngine, violation_ids: list[int | None]) -> int:
    ids = [v for v in violation_ids if v is not None]
    if not ids:
        return 0
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(audit_violation.c.id).where(
                audit_violation.c.id.in_(ids), audit_violation.c.is_open.is_(None)
            )
        )
        return len(rows.all())
