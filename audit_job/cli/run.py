"""`audit-job run` and `audit-job worker`: the main job, in the foreground.

The service (the HTTP client, the pipeline, the store: ~0.6 s of imports) and the progress
view are imported when a command runs: every process loads this module, `--help` included."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import typer

from audit_job.cli.common import exit_with, loaded_config, run_async
from audit_job.errors import EXIT_FATAL, EXIT_INTERRUPTED, EXIT_ITEM_ERRORS
from audit_job.models import RunStatus

if TYPE_CHECKING:
    import asyncio

    from audit_job.commands.run import RunRequest, RunSummary
    from audit_job.commands.run.types import PacingSummary
    from audit_job.config import LoadedConfig

log = logging.getLogger("audit_job.run")
EXIT_BY_STATUS = {
    RunStatus.SUCCEEDED: 0,
    RunStatus.COMPLETED_WITH_ERRORS: EXIT_ITEM_ERRORS,
    RunStatus.FAILED: EXIT_FATAL,
    RunStatus.INTERRUPTED: EXIT_INTERRUPTED,
    RunStatus.RUNNING: 0,  # a joined worker whose share is done; the owner finishes the run
}


def install_stop_signals(stop: asyncio.Event) -> None:
    """First SIGINT/SIGTERM: stop claiming, finish what is in flight, flush, exit.
    A second one exits at once; unflushed rows stay pending for a resume."""
    import asyncio

    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            print("audit-job: second signal, exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        name = signal.Signals(signum).name
        log.warning(
            "%s: finishing requests in flight and saving answers (again to quit at once)",
            name,
            extra={"event": "stopping"},
        )
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)


async def _run(loaded: LoadedConfig, request: RunRequest, show_progress: bool) -> RunSummary:
    import asyncio

    from audit_job.commands import run as service
    from audit_job.progress import ProgressView

    stop = asyncio.Event()
    install_stop_signals(stop)
    view = ProgressView(bar=show_progress and sys.stderr.isatty())
    async with view.showing():
        return await service.execute(loaded, request, stop, on_start=view.attach)


def print_summary(summary: RunSummary, as_json: bool) -> None:
    # Notices (a dead run found and marked interrupted) go to stderr in either format.
    for notice in summary.notices:
        print(f"note: {notice}", file=sys.stderr)
    if as_json:
        print(
            json.dumps(
                {
                    "run_id": summary.run_id,
                    "status": summary.status.value,
                    "counts": summary.counts,
                    "total": summary.total,
                    "duration_seconds": round(summary.duration_seconds, 3),
                    "checks_per_second": round(summary.checks_per_second, 1),
                    "retries": summary.retries,
                    "throttled": summary.throttled,
                    "latency_ms": summary.latency_ms,
                    **(summary.pacing.as_dict() if summary.pacing is not None else {}),
                    "message": summary.message,
                    "violations": summary.violations,
                    "delivery": summary.delivery,
                }
            )
        )
        return
    c = summary.counts
    print(
        f"run {summary.run_id} {summary.status.value} in {summary.duration_seconds:.1f} s: "
        f"{summary.total} pairs: active {c['active']}, inactive {c['inactive']}, "
        f"error {c['error']}, pending {c['pending']}"
    )
    lat = summary.latency_ms
    latency = (
        f"latency p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms"
        if lat["p50"] is not None
        else "no requests"
    )
    print(
        f"  {summary.checks_per_second:.1f} checks/s, {summary.retries} retries, "
        f"{summary.throttled} throttled (429), {latency}"
    )
    if summary.violations is not None:
        v = summary.violations
        print(
            f"  violations: {v['opened']} opened, {v['resolved']} resolved by this run; "
            f"{v['open']} open in all (audit-job violations --open)"
        )
    if summary.delivery:
        print("  events: " + "; ".join(_delivered(sink) for sink in summary.delivery))
    if summary.pacing is not None:
        print(f"  {describe_pacing(summary.pacing)}")
    if summary.message:
        print(f"  {summary.message}")


def _delivered(sink: dict[str, Any]) -> str:
    pending = "" if sink["pending"] is None else f", {sink['pending']} pending"
    text = f"{sink['sink']} {sink['outcome']} ({sink['delivered']} delivered{pending})"
    return text + (f": {sink['error']}" if sink["error"] else "")


def describe_pacing(pacing: PacingSummary) -> str:
    """`concurrency auto (peak 24 in flight, limit 22), rate 291.0/s (bounded by the
    server), started at the learned rate 291.0/s`."""
    text = (
        f"concurrency {pacing.concurrency} (peak {pacing.concurrency_peak} in flight, "
        f"limit {pacing.concurrency_limit}), rate {pacing.rate_per_second:.1f}/s"
    )
    if pacing.server_bounded:
        text += " (bounded by the server)"
    if pacing.learned_rate is not None:
        text += f", started at the learned rate {pacing.learned_rate:.1f}/s"
    return text


_NO_LEARNED_RATE = typer.Option(
    False,
    "--no-learned-rate",
    help="start at [audit] rate_per_second, not at the rate learned by earlier runs",
)


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        ctx: typer.Context,
        app_id: str | None = typer.Option(None, "--app", help="only pairs of this app"),
        user_id: str | None = typer.Option(None, "--user", help="only pairs of this user"),
        resume: int | None = typer.Option(
            None, "--resume", help="continue this run's pending pairs"
        ),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="count what would be checked; no API calls"
        ),
        no_progress: bool = typer.Option(False, "--no-progress", help="log lines instead of a bar"),
        as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
        no_learned_rate: bool = _NO_LEARNED_RATE,
    ) -> None:
        """Check every enabled pair once and record the answers. With [[sink]] blocks
        configured, the run's events are delivered while it goes and, for at most
        [events] drain_seconds, after its last answer.

        Exit codes: 0 succeeded, 3 completed with per-pair errors, 1 failed,
        130 interrupted (resumable with --resume)."""
        from audit_job.commands import run as service

        loaded = loaded_config(ctx)
        if dry_run:
            planned = run_async(service.plan(loaded, app_id, user_id))
            if as_json:
                print(json.dumps(planned, ensure_ascii=False))
                return
            print(f"would check {planned['pairs']} pairs from {planned['source']}; first ones:")
            for pair in planned["sample"]:
                print(f"  {pair['app_id']}\t{pair['user_id']}")
            return
        if resume is not None and (app_id or user_id):
            raise typer.BadParameter("--resume continues a run as it was; drop --app/--user")
        request = service.RunRequest(
            app_id=app_id,
            user_id=user_id,
            resume_run_id=resume,
            use_learned_rate=not no_learned_rate,
        )
        summary = run_async(_run(loaded, request, not no_progress))
        print_summary(summary, as_json)
        exit_with(EXIT_BY_STATUS[summary.status])

    @app.command("worker")
    def worker(
        ctx: typer.Context,
        run_id: int = typer.Option(..., "--run", help="the live run to help with"),
        no_progress: bool = typer.Option(False, "--no-progress", help="log lines instead of a bar"),
        as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
        no_learned_rate: bool = _NO_LEARNED_RATE,
    ) -> None:
        """Join a live run from another process or host (PostgreSQL, MariaDB/MySQL): claim and check
        its pending pairs, sharing the run's rate budget with its other workers."""
        from audit_job.commands import run as service

        loaded = loaded_config(ctx)
        request = service.RunRequest(join_run_id=run_id, use_learned_rate=not no_learned_rate)
        summary = run_async(_run(loaded, request, not no_progress))
        print_summary(summary, as_json)
        exit_with(EXIT_BY_STATUS[summary.status])
