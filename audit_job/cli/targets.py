"""`audit-job targets ...`: the pairs to audit.

The service (SQLAlchemy, the drivers, the config) is imported when a command runs: every
process loads this module, `--help` included."""

from __future__ import annotations

import sys

import typer

from audit_job.cli import discovery
from audit_job.cli.common import exit_with, loaded_config, run_async, stdout_is_terminal
from audit_job.errors import EXIT_ITEM_ERRORS, ConfigError
from audit_job.render import Format, write_rows, write_rows_async

TARGET_COLUMNS = [
    "app_id",
    "user_id",
    "enabled",
    "created_at",
    "expect",
    "effective_expect",
    "severity",
    "expect_source",
]
SHOWN_REJECTIONS = 20


def default_format(fmt: Format | None) -> Format:
    if fmt is not None:
        return fmt
    return Format.table if stdout_is_terminal() else Format.csv


def register(app: typer.Typer) -> None:
    targets = typer.Typer(help="Manage the user/app pairs to audit (table audit_target).")
    app.add_typer(targets, name="targets")
    discovery.register(targets)  # discover, sync --from authing

    @targets.command("import")
    def import_(
        ctx: typer.Context,
        file: str = typer.Argument(
            ..., help="CSV with header app_id,user_id[,enabled][,expect]; - for stdin"
        ),
    ) -> None:
        """Import pairs from CSV: streamed, idempotent, duplicates collapse."""
        from audit_job.commands import targets as service

        settings = loaded_config(ctx).settings
        if file == "-":
            summary = run_async(service.import_csv(settings, sys.stdin.buffer, "<stdin>"))
        else:
            try:
                stream = open(file, "rb")  # noqa: SIM115 - closed below, across the async call
            except OSError as exc:
                raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
            with stream:
                summary = run_async(service.import_csv(settings, stream, file))
        name = "<stdin>" if file == "-" else file
        for rejected in summary.rejections[:SHOWN_REJECTIONS]:
            print(f"{name}: line {rejected.line}: {rejected.reason}", file=sys.stderr)
        if summary.rejected > SHOWN_REJECTIONS:
            print(
                f"{name}: ... and {summary.rejected - SHOWN_REJECTIONS} more rejected lines",
                file=sys.stderr,
            )
        print(
            f"imported {summary.read} rows: {summary.added} new, {summary.unchanged} already "
            f"present or updated, {summary.rejected} rejected; {summary.total_after} targets in all"
        )
        exit_with(EXIT_ITEM_ERRORS if summary.rejected else 0)

    @targets.command("add")
    def add(ctx: typer.Context, app_id: str, user_id: str) -> None:
        """Add one pair (or enable it if it was disabled)."""
        from audit_job.commands import targets as service

        outcome = run_async(service.add(loaded_config(ctx).settings, app_id, user_id))
        print(
            {"added": "added", "enabled": "enabled again", "exists": "already present"}[outcome]
            + f": {app_id} {user_id}"
        )

    @targets.command("remove")
    def remove(ctx: typer.Context, app_id: str, user_id: str) -> None:
        """Remove one pair (its past checks stay)."""
        from audit_job.commands import targets as service

        removed = run_async(service.remove(loaded_config(ctx).settings, app_id, user_id))
        print(f"removed: {app_id} {user_id}" if removed else f"not a target: {app_id} {user_id}")
        exit_with(0 if removed else EXIT_ITEM_ERRORS)

    def _toggle(ctx: typer.Context, app_id: str, user_id: str | None, enabled: bool) -> None:
        from audit_job.commands import targets as service

        changed = run_async(
            service.set_enabled(loaded_config(ctx).settings, app_id, user_id, enabled)
        )
        print(f"{'enabled' if enabled else 'disabled'} {changed} target(s)")

    @targets.command("enable")
    def enable(
        ctx: typer.Context,
        app_id: str,
        user_id: str | None = typer.Argument(None, help="omit to enable every pair of the app"),
    ) -> None:
        """Enable a pair, or every pair of an app."""
        _toggle(ctx, app_id, user_id, True)

    @targets.command("disable")
    def disable(
        ctx: typer.Context,
        app_id: str,
        user_id: str | None = typer.Argument(None, help="omit to disable every pair of the app"),
    ) -> None:
        """Disable a pair, or every pair of an app (kept, but not audited)."""
        _toggle(ctx, app_id, user_id, False)

    @targets.command("expect")
    def expect(
        ctx: typer.Context,
        args: list[str] = typer.Argument(
            ..., metavar="[APP USER] any|active|inactive", help="the pair and its expectation"
        ),
        app: str | None = typer.Option(None, "--app", help="every pair of this app"),
    ) -> None:
        """Set what a pair's session should be (`targets expect APP USER inactive`), or
        every pair of an app (`targets expect --app APP active`); `any` clears it."""
        if app is not None:
            if len(args) != 1:
                raise ConfigError(
                    "targets expect --app APP: give one value: any, active or inactive"
                )
            app_id, user_id, value = app, None, args[0]
        else:
            if len(args) != 3:
                raise ConfigError(
                    "targets expect: give APP USER any|active|inactive (or --app APP VALUE)"
                )
            app_id, user_id, value = args
        from audit_job.commands import targets as service

        settings = loaded_config(ctx).settings
        changed = run_async(service.set_expect(settings, app_id, user_id, value))
        if user_id is not None and not changed:
            print(f"not a target: {app_id} {user_id}", file=sys.stderr)
            exit_with(EXIT_ITEM_ERRORS)
        print(f"expect {value.strip().lower()}: {changed} target(s)")

    @targets.command("list")
    def list_(
        ctx: typer.Context,
        app: str | None = typer.Option(None, "--app", help="only this app"),
        user: str | None = typer.Option(None, "--user", help="only this user"),
        fmt: Format | None = typer.Option(None, "--format", "-f", help="table, json or csv"),
    ) -> None:
        """List targets (streamed for json and csv)."""
        from audit_job.commands import targets as service

        settings = loaded_config(ctx).settings
        run_async(
            write_rows_async(
                service.listing(settings, app, user),
                TARGET_COLUMNS,
                default_format(fmt),
                sys.stdout,
            )
        )

    @targets.command("count")
    def count(
        ctx: typer.Context,
        app: str | None = typer.Option(None, "--app", help="only this app"),
        fmt: Format | None = typer.Option(None, "--format", "-f", help="table, json or csv"),
    ) -> None:
        """How many targets, and how many are enabled."""
        from audit_job.commands import targets as service

        counts = run_async(service.count(loaded_config(ctx).settings, app))
        write_rows([counts], ["targets", "enabled"], default_format(fmt), sys.stdout)
