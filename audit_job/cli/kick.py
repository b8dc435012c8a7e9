"""`audit-job kick`: end sessions that must not exist. A dry run unless --apply.

The services are imported when the command runs (see cli/targets.py)."""

from __future__ import annotations

import sys

import typer

from audit_job.cli.common import exit_with, loaded_config, run_async
from audit_job.errors import EXIT_ITEM_ERRORS, ConfigError

SHOWN_USERS = 50


def register(app: typer.Typer) -> None:
    @app.command("kick")
    def kick(
        ctx: typer.Context,
        violations: bool = typer.Option(
            False, "--violations", help="open violations whose pair should be inactive"
        ),
        app_id: str | None = typer.Option(None, "--app", help="this app (or narrow the others)"),
        user_id: str | None = typer.Option(None, "--user", help="this user (or narrow the others)"),
        run_id: int | None = typer.Option(None, "--run", help="the pairs a run found ..."),
        status: str | None = typer.Option(None, "--status", help="... with --run: active"),
        apply: bool = typer.Option(False, "--apply", help="kick (default: print the plan)"),
        yes: bool = typer.Option(False, "--yes", help="no confirmation question (scripts)"),
        max_users: int | None = typer.Option(
            None, "--max-users", min=1, help="allow up to N users ([remediation] max_users)"
        ),
        resume: bool = typer.Option(False, "--resume", help="finish interrupted plans"),
        plan_id: str | None = typer.Option(None, "--plan", help="with --resume: only this plan"),
    ) -> None:
        """Kick users out of apps (kick-users) and re-check that their sessions are gone.
        Prints the plan (users, apps, calls) unless --apply."""
        loaded = loaded_config(ctx)
        from audit_job.commands import kick as service

        if resume:
            summaries = run_async(service.resume(loaded, plan_id))
            if not summaries:
                print("kick --resume: no unfinished plan")
            for summary in summaries:
                _print_outcome(summary)
            exit_with(EXIT_ITEM_ERRORS if any(s.failed or s.in_doubt for s in summaries) else 0)
            return
        from audit_job.commands import kick_plan
        from audit_job.commands.database import open_database

        choice = kick_plan.Choice(violations, app_id, user_id, run_id, status)
        choice.check()  # bad usage fails before the database is opened

        async def planned() -> kick_plan.Plan:
            async with open_database(loaded.settings) as engine:
                return await kick_plan.make_plan(engine, choice)

        plan = run_async(planned())
        configured = loaded.settings.remediation.max_users
        limit = max_users if max_users is not None else configured
        if not apply:
            _print_plan(plan, apply)
            if len(plan.users) > limit:
                print(f"(--apply would refuse this plan: more than {limit} users)")
            return
        if not plan.items:
            raise ConfigError("kick --apply: the plan is empty; nothing to kick")
        kick_plan.guard(plan, limit, configured=configured)
        _print_plan(plan, apply)
        if not yes:
            if not sys.stdin.isatty():
                raise ConfigError("kick --apply: not on a terminal; confirm with --yes")
            answer = input(f"kick {len(plan.users)} users from their sessions? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing kicked")
                exit_with(1)
        summary = run_async(service.apply_plan(loaded, plan))
        _print_outcome(summary)
        exit_with(EXIT_ITEM_ERRORS if summary.failed or summary.in_doubt else 0)


def _print_plan(plan, apply: bool) -> None:  # type: ignore[no-untyped-def]
    calls = plan.calls()
    head = "kick plan" if apply else "kick plan (dry run, nothing kicked)"
    print(f"{head}: {len(plan.users)} users, {len(plan.apps)} apps, {len(calls)} kick-users calls")
    for call in calls[:SHOWN_USERS]:
        violations = (
            f"  (violations {', '.join(str(v) for v in call.violation_ids)})"
            if call.violation_ids
            else ""
        )
        print(f"  {call.user_id}: {', '.join(call.app_ids)}{violations}")
    if len(calls) > SHOWN_USERS:
        print(f"  ... and {len(calls) - SHOWN_USERS} more calls")


def _print_outcome(summary) -> None:  # type: ignore[no-untyped-def]
    print(
        f"plan {summary.plan_id}: {summary.calls} kick-users calls, {len(summary.kicked)} users "
        f"kicked, {len(summary.failed)} failed"
        + (f", {summary.confirmed} found already gone" if summary.confirmed else "")
    )
    for user, why in sorted(summary.failed.items()):
        print(f"  failed: {user}: {why}")
    if summary.in_doubt:
        print(f"  {summary.in_doubt} pairs in doubt (check failed); run: audit-job kick --resume")
    if summary.recheck_run_id is not None:
        print(
            f"re-check (run {summary.recheck_run_id}): {len(summary.still_active)} sessions still "
            f"active, {summary.resolved} violations resolved"
        )
        for app_id, user_id in summary.still_active:
            print(f"  still active: {app_id} {user_id}")
