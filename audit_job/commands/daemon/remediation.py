"""The daemon's optional steps around a slot's run: `[discovery] sync_before_run` (the
targets synced with Authing first) and `[remediation] auto` (open violations expecting
`inactive` kicked after the run, under the same max_users guard as `audit-job kick`).
Both are off by default; a failure is logged and never stops the schedule."""

from __future__ import annotations

import logging

from audit_job.commands import discover, kick, kick_plan, sync
from audit_job.commands.database import open_database
from audit_job.config import LoadedConfig
from audit_job.errors import AuditJobError
from audit_job.metrics import DaemonMetrics

log = logging.getLogger("audit_job.commands.daemon")


async def sync_first(loaded: LoadedConfig) -> None:
    settings = loaded.settings
    try:
        sel = discover.selection(settings, None, None, None)
        summary = await sync.sync_targets(loaded, sel)
    except AuditJobError as exc:
        log.error("sync before the run failed: %s", exc, extra={"event": "sync_failed"})
        return
    log.info(
        "synced targets with Authing: %d new, %d disabled",
        summary.new,
        summary.disabled,
        extra={"event": "sync_done"},
    )


async def kick_after(loaded: LoadedConfig, metrics: DaemonMetrics) -> None:
    limit = loaded.settings.remediation.max_users
    log.warning(
        "[remediation] auto = true: kicking users with open violations that expect "
        "inactive (at most %d users)",
        limit,
        extra={"event": "remediation_auto"},
    )
    try:
        summaries = await kick.resume(loaded)  # an interrupted plan is finished first
        async with open_database(loaded.settings) as engine:
            plan = await kick_plan.make_plan(engine, kick_plan.Choice(violations=True))
        if plan.items:
            allow = "[remediation] max_users = {count}"
            kick_plan.guard(plan, limit, configured=limit, allow=allow)
            summaries.append(await kick.apply_plan(loaded, plan))
    except AuditJobError as exc:
        log.error("automatic remediation: %s", exc, extra={"event": "remediation_refused"})
        return
    for summary in summaries:
        log.warning(
            "kick plan %s: %d users kicked, %d failed, %d violations resolved by the re-check",
            summary.plan_id,
            len(summary.kicked),
            len(summary.failed),
            summary.resolved,
            extra={"event": "remediation_done"},
        )
        for outcome, count in summary.outcomes.items():
            metrics.remediations[outcome] = metrics.remediations.get(outcome, 0) + count
