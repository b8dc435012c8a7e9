"""`audit-job runs | results | history | changes | report | prune`: reading what audits
stored. Data goes to stdout (table on a terminal, CSV otherwise, or --format); notes to
stderr. JSON lines and CSV stream from the database page by page.

The services (SQLAlchemy, the drivers, the config) and the HTML renderer are imported when
a command runs: every process loads this module, `--help` included."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from audit_job.cli.common import loaded_config, run_async
from audit_job.cli.targets import default_format
from audit_job.errors import ConfigError
from audit_job.render import Format, write_rows, write_rows_async

if TYPE_CHECKING:
    from audit_job.commands.report import Report

TABLE_ROWS = 1000  # a table is sized in memory; more rows belong in csv or json
# What the runs table leaves out of the store's RUN_COLUMNS (csv and json keep them).
RUN_TABLE_OMITS = ("message", "retries", "throttled", "missed_count")
# The table says in words where a run's rate started (csv and json: learned_rate_per_second).
LEARNED_START = "learned_rate_per_second"
LEARNED_NOTE = "rate_start"
CHECK_TABLE_COLUMNS = [
    "run_id",
    "app_id",
    "user_id",
    "status",
    "checked_at",
    "attempts",
    "http_status",
    "message",
]

FORMAT_OPTION = typer.Option(None, "--format", "-f", help="table, json (lines) or csv")
TZ_OPTION = typer.Option("UTC", "--tz", help="show times in this zone (IANA name)")


async def _capped(
    rows: AsyncIterable[Mapping[str, Any]], limit: int
) -> AsyncIterator[Mapping[str, Any]]:
    """The first `limit` rows; the source is closed when we stop early, so its
    database connection is released inside the event loop, not at shutdown."""
    shown = 0
    iterator = aiter(rows)
    try:
        async for row in iterator:
            if shown == limit:
                print(
                    f"(showing the first {limit} rows; use --format csv or json for all)",
                    file=sys.stderr,
                )
                return
            shown += 1
            yield row
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()


def _emit(
    rows: AsyncIterable[Mapping[str, Any]],
    columns: list[str],
    fmt: Format | None,
    zone: tzinfo,
    title: str | None = None,
    table_columns: list[str] | None = None,
) -> int:
    chosen = default_format(fmt)
    if chosen is Format.table:
        rows = _capped(rows, TABLE_ROWS)
        columns = table_columns or columns
    return run_async(write_rows_async(rows, columns, chosen, sys.stdout, zone, title))


VIOLATION_TABLE_COLUMNS = [
    "severity",
    "app_id",
    "user_id",
    "expected",
    "observed",
    "source",
    "opened_run_id",
]


def _violations_cell(row: Mapping[str, Any]) -> str:
    """`open (+opened -resolved)`: open after the run, and what the run changed."""
    return f"{row['violations_open']} (+{row['violations_opened']} -{row['violations_resolved']})"


def print_report(rep: Report, fmt: Format, zone: tzinfo) -> None:
    """The per-app report (with each app's violations); also what `audit-job demo` shows
    after its run. A table also lists the violations open after the run."""
    from audit_job.commands.report import REPORT_COLUMNS

    versus = f" vs run {rep.previous_run_id}" if rep.previous_run_id is not None else ""
    columns, rows = REPORT_COLUMNS, rep.rows
    if fmt is Format.table:  # one narrow column for the three violation counts
        columns = [c for c in REPORT_COLUMNS if not c.endswith("run_id")]
        columns = [c for c in columns if not c.startswith("violations_")] + ["violations"]
        rows = [{**row, "violations": _violations_cell(row)} for row in rows]
    write_rows(rows, columns, fmt, sys.stdout, zone, f"run {rep.run_id}{versus}: per app")
    if fmt is not Format.table or not rep.open_violations:
        return
    shown = len(rep.open_violations)
    more = f", the {shown} most severe shown" if rep.open_total > shown else ""
    title = f"violations open after run {rep.run_id} ({rep.open_total}{more})"
    write_rows(rep.open_violations, VIOLATION_TABLE_COLUMNS, fmt, sys.stdout, zone, title)
    print("all of them: audit-job violations --open", file=sys.stderr)


def register(app: typer.Typer) -> None:
    @app.command("runs")
    def runs(
        ctx: typer.Context,
        limit: int = typer.Option(20, "--limit", "-n", min=1, help="how many, newest first"),
        fmt: Format | None = FORMAT_OPTION,
        tz: str = TZ_OPTION,
    ) -> None:
        """Recent runs (skipped and missed schedule slots included)."""
        from audit_job.commands import report as service
        from audit_job.store.reports import RUN_COLUMNS

        zone = service.parse_zone(tz)
        rows = run_async(service.runs(loaded_config(ctx).settings, limit))
        chosen = default_format(fmt)
        columns = RUN_COLUMNS
        if chosen is Format.table:
            columns = [
                LEARNED_NOTE if c == LEARNED_START else c
                for c in RUN_COLUMNS
                if c not in RUN_TABLE_OMITS
            ]
            for row in rows:
                learned = row.get(LEARNED_START)
                row[LEARNED_NOTE] = (
                    "" if learned is None else f"started at the learned rate {learned:.1f}/s"
                )
        write_rows(rows, columns, chosen, sys.stdout, zone, "runs")

    @app.command("results")
    def results(
        ctx: typer.Context,
        run: str | None = typer.Option(None, "--run", help="run id or 'latest' (default)"),
        app_id: str | None = typer.Option(None, "--app", help="only this app"),
        user_id: str | None = typer.Option(None, "--user", help="only this user"),
        status: str | None = typer.Option(
            None, "--status", help="active, inactive, error or pending"
        ),
        since: str | None = typer.Option(
            None, "--since", help="checked at or after (ISO time, date, or 24h/7d ago)"
        ),
        until: str | None = typer.Option(None, "--until", help="checked before this time"),
        fmt: Format | None = FORMAT_OPTION,
        tz: str = TZ_OPTION,
    ) -> None:
        """The checks of a run (the latest by default; with --since/--until and no --run,
        of every run in that window)."""
        from audit_job.commands import report as service
        from audit_job.store.reports import CHECK_COLUMNS

        zone = service.parse_zone(tz)
        service.check_status(status)
        rows = service.results(
            loaded_config(ctx).settings,
            run=run,
            app_id=app_id,
            user_id=user_id,
            status=status,
            since=service.parse_time(since, option="--since") if since else None,
            until=service.parse_time(until, option="--until") if until else None,
        )
        _emit(rows, CHECK_COLUMNS, fmt, zone, "results", CHECK_TABLE_COLUMNS)

    @app.command("history")
    def history(
        ctx: typer.Context,
        app_id: str = typer.Argument(..., metavar="APP"),
        user_id: str = typer.Argument(..., metavar="USER"),
        fmt: Format | None = FORMAT_OPTION,
        tz: str = TZ_OPTION,
    ) -> None:
        """One pair's answers run by run; `change` marks where it flipped."""
        from audit_job.commands import report as service
        from audit_job.store.reports import HISTORY_COLUMNS

        zone = service.parse_zone(tz)
        rows = service.history(loaded_config(ctx).settings, app_id, user_id)
        if not _emit(rows, HISTORY_COLUMNS, fmt, zone, f"history of {app_id} {user_id}"):
            print(f"no checks of {app_id} {user_id}", file=sys.stderr)

    @app.command("changes")
    def changes(
        ctx: typer.Context,
        run: str | None = typer.Option(None, "--run", help="run id or 'latest' (default)"),
        since: str | None = typer.Option(
            None, "--since", help="compare with this run id, or the state at this time"
        ),
        fmt: Format | None = FORMAT_OPTION,
        tz: str = TZ_OPTION,
    ) -> None:
        """Pairs whose state changed: inactive->active, active->inactive, newly_seen,
        gone_from_targets (against the run before, by default)."""
        from audit_job.commands import report as service
        from audit_job.store.reports import CHANGE_COLUMNS

        zone = service.parse_zone(tz)
        settings = loaded_config(ctx).settings
        run_id, base = run_async(service.resolve_changes(settings, run, since))
        title = f"changes from run {base} to run {run_id}" if base else f"run {run_id}: all new"
        count = _emit(service.changes(settings, run_id, base), CHANGE_COLUMNS, fmt, zone, title)
        print(f"{count} changes in run {run_id} against run {base}", file=sys.stderr)

    @app.command("report")
    def report(
        ctx: typer.Context,
        run: str | None = typer.Option(None, "--run", help="run id or 'latest' (default)"),
        html: Path | None = typer.Option(
            None, "--html", help="write a self-contained HTML report to this file"
        ),
        recent: int = typer.Option(30, "--runs", min=1, help="runs in the HTML chart"),
        fmt: Format | None = FORMAT_OPTION,
        tz: str = TZ_OPTION,
    ) -> None:
        """Per app: active/inactive/error, active share, change against the run before."""
        from audit_job.commands import report as service

        zone = service.parse_zone(tz)
        settings = loaded_config(ctx).settings
        if html is not None:
            from audit_job import html_report

            data = run_async(service.html_data(settings, run, recent_runs=recent))
            try:
                html.write_text(html_report.render(data, zone), encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"--html {html}: cannot write: {exc.strerror}") from None
            print(f"wrote {html} (run {data.run_id}, {len(data.series_runs)} runs charted)")
            return
        print_report(run_async(service.report(settings, run)), default_format(fmt), zone)

    @app.command("prune")
    def prune(
        ctx: typer.Context,
        keep_days: int | None = typer.Option(
            None, "--keep-days", help="keep this many days of checks ([retention] keep_days)"
        ),
        dry_run: bool = typer.Option(False, "--dry-run", help="count, delete nothing"),
    ) -> None:
        """Delete the checks of runs older than N days (never the latest run nor a running
        one, never session_state; run rows and their totals stay). 0 keeps only those.
        Also deletes events older than [events] keep_days that every configured sink has
        delivered (as `events prune`)."""
        from audit_job.commands import prune as prune_service

        settings = loaded_config(ctx).settings
        days = keep_days if keep_days is not None else settings.retention.keep_days
        if days is None:
            raise ConfigError("prune: give --keep-days N or set [retention] keep_days")
        result = run_async(prune_service.prune_configured(settings, days, dry_run))
        verb = "would delete" if dry_run else "deleted"
        for run_id, count in sorted(result.per_run.items()):
            print(f"{verb} {count} checks of run {run_id}")
        print(
            f"{verb} {result.checks} checks of {len(result.per_run)} runs started before "
            f"{result.cutoff.isoformat(timespec='seconds')}"
        )
        if result.events is not None:
            print(
                f"{verb} {result.events.deleted} delivered events created before "
                f"{result.events.cutoff.isoformat(timespec='seconds')}"
            )
