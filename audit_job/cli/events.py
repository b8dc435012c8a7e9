"""`audit-job events ...`: the event feed (list, follow, deliver, retry, sinks, prune).

Services are imported when a command runs: the delivery side brings aiohttp and the
database, which `audit-job --help` has no use for."""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

import typer

from audit_job.cli.common import exit_with, loaded_config, run_async, stdout_is_terminal
from audit_job.errors import EXIT_FATAL, EXIT_ITEM_ERRORS
from audit_job.render import Format, write_rows

SINK_TABLE_COLUMNS = [
    "name",
    "type",
    "target",
    "cursor",
    "pending",
    "failing",
    "delivered",
    "delivered_at",
    "last_error",
]


def _report_line(report: Any) -> str:
    name, outcome = report.name, report.outcome
    pending = "" if report.pending is None else f", {report.pending} pending"
    if outcome == "drained":
        return f"{name}: delivered {report.delivered} events, cursor {report.cursor}{pending}"
    if outcome == "failing":
        return (
            f"{name}: failing ({report.error}); fix the receiver, then run: "
            f"audit-job events retry {name}{pending}"
        )
    if outcome == "gave_up":
        return (
            f"{name}: delivered {report.delivered} events, then gave up for now: "
            f"{report.error}{pending}"
        )
    if outcome == "busy":
        return f"{name}: another deliverer is delivering to it now"
    if outcome == "lost":
        return f"{name}: lost its lease to another deliverer after {report.delivered} events"
    if outcome == "stopped":
        return f"{name}: stopped after {report.delivered} events{pending}"
    return f"{name}: database error: {report.error}"


async def _follow_deliveries(settings: Any) -> None:
    import asyncio

    from audit_job.commands import events as service

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await service.deliver(settings, follow=True, stop=stop)


async def _print_events(rows: Any, follow: bool) -> int:
    count = 0
    try:
        async for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
            if follow:
                sys.stdout.flush()
    finally:
        await rows.aclose()
    return count


def register(app: typer.Typer) -> None:
    events = typer.Typer(
        help="The event feed (table audit_event): list or follow it, deliver it to the "
        "[[sink]]s, see and retry sinks.",
        invoke_without_command=True,
    )
    app.add_typer(events, name="events")

    @events.callback(invoke_without_command=True)
    def listing(
        ctx: typer.Context,
        since: str | None = typer.Option(
            None, "--since", help="after this event id, or from this time (ISO, date, 24h)"
        ),
        types: list[str] | None = typer.Option(
            None, "--type", metavar="TYPE", help="only this type or glob (violation.*); repeatable"
        ),
        follow: bool = typer.Option(False, "--follow", help="then wait for new events"),
    ) -> None:
        """Without a command: print events as JSON lines, in id order, as sinks get them."""
        if ctx.invoked_subcommand is not None:
            return
        from audit_job.commands import events as service

        settings = loaded_config(ctx).settings
        chosen = service.parse_types(types)
        start = service.parse_since(since)
        rows = service.listing(settings, since=start, types=chosen, follow=follow)
        try:
            run_async(_print_events(rows, follow))
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (| head): not an error

    @events.command("deliver")
    def deliver(
        ctx: typer.Context,
        follow: bool = typer.Option(
            False, "--follow", help="keep delivering new events until SIGTERM/SIGINT"
        ),
    ) -> None:
        """Deliver every sink's pending events once (for cron), or continuously."""
        from audit_job.commands import events as service

        settings = loaded_config(ctx).settings
        if follow:
            run_async(_follow_deliveries(settings))
            return
        reports = run_async(service.deliver(settings))
        for report in reports:
            print(_report_line(report))
        if any(r.outcome == "error" for r in reports):
            exit_with(EXIT_FATAL)
        if any(r.outcome in ("failing", "gave_up", "lost") for r in reports):
            exit_with(EXIT_ITEM_ERRORS)

    @events.command("retry")
    def retry(ctx: typer.Context, sink: str = typer.Argument(..., metavar="SINK")) -> None:
        """Let a failing sink deliver again, starting with the batch it refused."""
        from audit_job.commands import events as service

        state = run_async(service.retry(loaded_config(ctx).settings, sink))
        print(
            f"{sink}: delivery resumes after event {state.last_event_id} at the next "
            "`audit-job events deliver` (or the running deliverer's next look)"
        )

    @events.command("sinks")
    def sinks(
        ctx: typer.Context,
        fmt: Format | None = typer.Option(None, "--format", "-f", help="table, json or csv"),
    ) -> None:
        """Each sink: cursor, pending events, failing or not, last error."""
        from audit_job.commands import events as service

        rows = run_async(service.sink_rows(loaded_config(ctx).settings))
        chosen = fmt or (Format.table if stdout_is_terminal() else Format.csv)
        columns = SINK_TABLE_COLUMNS if chosen is Format.table else service.SINK_COLUMNS
        write_rows(rows, columns, chosen, sys.stdout, title="sinks")

    @events.command("prune")
    def prune(
        ctx: typer.Context,
        keep_days: int | None = typer.Option(
            None, "--keep-days", help="keep this many days of events ([events] keep_days)"
        ),
        dry_run: bool = typer.Option(False, "--dry-run", help="count, delete nothing"),
    ) -> None:
        """Delete events older than N days that every sink has delivered (never one still
        pending for a sink, never the newest)."""
        from audit_job.commands import events as service

        result = run_async(
            service.prune_configured(loaded_config(ctx).settings, keep_days, dry_run)
        )
        verb = "would delete" if dry_run else "deleted"
        print(
            f"{verb} {result.deleted} events created before "
            f"{result.cutoff.isoformat(timespec='seconds')} and delivered to every sink"
        )
