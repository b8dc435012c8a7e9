"""`audit-job targets discover` and `audit-job targets sync --from authing`.

The service is imported when a command runs (see cli/targets.py)."""

from __future__ import annotations

import csv
import sys
from typing import Any

import typer

from audit_job.cli.common import loaded_config, run_async
from audit_job.errors import ConfigError

PROPOSAL_COLUMNS = ["app_id", "user_id", "effective_expect", "severity", "expect_source"]


def register(targets: typer.Typer) -> None:
    @targets.command("discover")
    def discover_(
        ctx: typer.Context,
        apps: list[str] = typer.Option(
            None, "--apps", help="app id or glob over appId (repeat it); default [discovery] apps"
        ),
        status: str | None = typer.Option(
            None, "--status", help="only users with this status, e.g. Activated"
        ),
        logged_in: bool | None = typer.Option(
            None, "--logged-in/--any-user", help="only users who ever logged in to the app"
        ),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="print the proposed pairs as CSV; write nothing"
        ),
    ) -> None:
        """Propose pairs from Authing (apps x users) and add them as targets. Resumes
        after an interruption at the page it had reached."""
        from audit_job.commands import discover, sync

        loaded = loaded_config(ctx)
        sel = discover.selection(loaded.settings, apps, status, logged_in)
        writer = csv.writer(sys.stdout, lineterminator="\n")
        if dry_run:
            writer.writerow(PROPOSAL_COLUMNS)

        def emit(rows: list[dict[str, Any]]) -> None:
            for row in rows:
                writer.writerow([row[c] for c in PROPOSAL_COLUMNS])

        summary = run_async(
            sync.discover_targets(loaded, sel, dry_run=dry_run, emit=emit if dry_run else None)
        )
        where = sys.stderr if dry_run else sys.stdout
        verb = "proposed (dry run, nothing written)" if dry_run else "proposed"
        added = "" if dry_run else f"; {summary.added} new targets"
        print(
            f"discover: {len(summary.apps)} apps ({', '.join(summary.apps[:10])}"
            f"{' ...' if len(summary.apps) > 10 else ''}), {summary.pages} pages read, "
            f"{summary.proposed} pairs {verb}{added}",
            file=where,
        )

    @targets.command("sync")
    def sync_(
        ctx: typer.Context,
        source: str = typer.Option(..., "--from", help="where the pairs come from: authing"),
        apps: list[str] = typer.Option(
            None, "--apps", help="app id or glob over appId (repeat it); default [discovery] apps"
        ),
        status: str | None = typer.Option(None, "--status", help="only users with this status"),
        logged_in: bool | None = typer.Option(
            None, "--logged-in/--any-user", help="only users who ever logged in to the app"
        ),
        dry_run: bool = typer.Option(False, "--dry-run", help="show the diff; change nothing"),
    ) -> None:
        """Bring the targets in line with Authing: add new pairs, disable (never delete)
        pairs whose user or app is gone."""
        if source != "authing":
            raise ConfigError(f"--from: only 'authing' is supported, got {source!r}")
        from audit_job.commands import discover, sync

        loaded = loaded_config(ctx)
        sel = discover.selection(loaded.settings, apps, status, logged_in)
        summary = run_async(sync.sync_targets(loaded, sel, dry_run=dry_run))
        for app_id, user_id in summary.shown_new:
            print(f"+ {app_id} {user_id}")
        if summary.new > len(summary.shown_new):
            print(f"+ ... and {summary.new - len(summary.shown_new)} more new pairs")
        for app_id, user_id, why in summary.shown_gone:
            print(f"- {app_id} {user_id} ({why})")
        gone = sum(summary.gone.values())
        if gone > len(summary.shown_gone):
            print(f"- ... and {gone - len(summary.shown_gone)} more pairs to disable")
        if dry_run:
            print(
                f"sync (dry run): {summary.new} new pairs, {gone} to disable "
                f"({summary.gone['user gone']} user gone, {summary.gone['app gone']} app gone); "
                "nothing changed"
            )
        else:
            print(
                f"sync: {summary.new} new pairs added, {summary.disabled} disabled "
                f"({summary.gone['user gone']} user gone, {summary.gone['app gone']} app gone)"
            )
