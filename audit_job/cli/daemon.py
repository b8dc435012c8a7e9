"""`audit-job daemon`: audit on the schedule until SIGTERM/SIGINT; SIGHUP reloads.

The daemon (APScheduler, prometheus-client, the health server: ~15 MB) is imported when
the command runs, not by every process that loads the CLI."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

import typer

from audit_job.cli.common import globals_of, loaded_config, run_async

if TYPE_CHECKING:
    from audit_job.commands.daemon import Daemon

log = logging.getLogger("audit_job.daemon")


async def _serve(daemon: Daemon) -> None:
    import asyncio

    loop = asyncio.get_running_loop()

    def on_stop(signum: int) -> None:
        if daemon.stop.is_set():
            print("audit-job: second signal, exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        log.warning("%s received", signal.Signals(signum).name, extra={"event": "signal"})
        daemon.stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_stop, signum)
    loop.add_signal_handler(signal.SIGHUP, daemon.reload)
    await daemon.serve()


def register(app: typer.Typer) -> None:
    @app.command("daemon")
    def daemon(ctx: typer.Context) -> None:
        """Audit on the [schedule] until stopped: one leader among daemons sharing a
        PostgreSQL or MariaDB database, every schedule slot recorded (run, skipped_overlap or
        missed), optional /healthz and /metrics on [daemon] listen.

        Signals: SIGTERM/SIGINT interrupt the current run (resumable) and exit;
        SIGHUP reloads the configuration file."""
        from audit_job import config
        from audit_job.commands.daemon import Daemon

        loaded = loaded_config(ctx)
        path = globals_of(ctx).config_path
        run_async(_serve(Daemon(loaded, reload=lambda: config.load(path))))
