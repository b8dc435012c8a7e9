"""`audit-job violations`: pairs whose answers contradicted their expected state.

The service is imported when the command runs (the CLI itself starts without the
database libraries)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

import typer

from audit_job.cli.common import loaded_config, run_async, stdout_is_terminal
from audit_job.render import Format, write_rows_async

TABLE_ROWS = 1000  # a table is sized in memory; more rows belong in csv or json
TABLE_COLUMNS = [
    "id",
    "app_id",
    "user_id",
    "expected",
    "observed",
    "severity",
    "opened_at",
    "resolved_at",
    "source",
]


async def _capped(rows: AsyncIterator[Mapping[str, Any]]) -> AsyncIterator[Mapping[str, Any]]:
    shown = 0
    try:
        async for row in rows:
            if shown == TABLE_ROWS:
                print(
                    f"(showing the newest {TABLE_ROWS}; use --format csv or json for all)",
                    file=sys.stderr,
                )
                return
            shown += 1
            yield row
    finally:
        await rows.aclose()  # type: ignore[attr-defined]


def register(app: typer.Typer) -> None:
    @app.command("violations")
    def violations(
        ctx: typer.Context,
        open_only: bool = typer.Option(False, "--open", help="only those still open"),
        app_id: str | None = typer.Option(None, "--app", help="only this app"),
        severity: str | None = typer.Option(
            None, "--severity", help="at least this severity: info, warning or critical"
        ),
        since: str | None = typer.Option(
            None, "--since", help="opened at or after (ISO time, date, or 24h/7d ago)"
        ),
        fmt: Format | None = typer.Option(None, "--format", "-f", help="table, json or csv"),
        tz: str = typer.Option("UTC", "--tz", help="show times in this zone (IANA name)"),
    ) -> None:
        """Violations, newest first: a pair's answer against its expected state (`targets
        expect`, [[policy]]); open until an answer no longer contradicts it."""
        from audit_job.commands import violations as service
        from audit_job.commands.report import parse_zone

        zone = parse_zone(tz)
        service.check_severity(severity)
        rows = service.listing(
            loaded_config(ctx).settings,
            open_only=open_only,
            app_id=app_id,
            severity=severity,
            since=since,
        )
        chosen = fmt or (Format.table if stdout_is_terminal() else Format.csv)
        columns = service.COLUMNS
        if chosen is Format.table:
            rows, columns = _capped(rows), TABLE_COLUMNS
        title = "open violations" if open_only else "violations"
        run_async(write_rows_async(rows, columns, chosen, sys.stdout, zone, title))
