"""The audit run: snapshot the pairs, work through them, record how it ended.

`execute` runs one to its end, in four steps, one module each:

- `start.py`: create a new run, resume an unfinished one, or join a live one (the
  liveness rule, also used by the daemon);
- `snapshot.py`: the pairs a new run will check (and `plan`, for `run --dry-run`);
- `drive.py`: this worker's limiter, client and pipeline, run to the end;
- `finish.py`: the run's final status and message, and the summary handed back;
- `delivery.py`: with `[[sink]]` blocks configured, the run's events delivered beside it.

`types.py` holds what a caller passes in and gets back (RunRequest, RunHandle, RunSummary).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job import logs
from audit_job.commands.database import open_database
from audit_job.commands.run import start
from audit_job.commands.run.delivery import beside_run, report_rows
from audit_job.commands.run.drive import drive
from audit_job.commands.run.snapshot import SNAPSHOT_PARTS, plan
from audit_job.commands.run.types import RunHandle, RunRequest, RunSummary
from audit_job.config import LoadedConfig
from audit_job.store import violation_reads
from audit_job.store.engine import describe_db_error

log = logging.getLogger(__name__)
__all__ = ["SNAPSHOT_PARTS", "RunHandle", "RunRequest", "RunSummary", "execute", "plan"]


async def execute(
    loaded: LoadedConfig,
    request: RunRequest,
    stop: asyncio.Event,
    *,
    on_start: Callable[[RunHandle], None] | None = None,
) -> RunSummary:
    """Run (or resume, or join) an audit to its end; never raises for per-pair errors.
    With sinks configured (and `request.deliver`), its events are delivered beside it."""
    settings = loaded.settings
    key_id, secret = loaded.require_credentials()
    logs.register_secret(secret)
    owner = request.join_run_id is None
    async with (
        open_database(settings, pool_size=4) as engine,
        beside_run(settings, request.deliver and owner) as delivery,
    ):
        notices: list[str] = []
        if request.join_run_id is not None:
            run_id = await start.join(engine, request.join_run_id, settings)
        elif request.resume_run_id is not None:
            run_id = await start.resume(
                engine, request.resume_run_id, settings, request.epoch, request.fence
            )
        else:
            run_id = await start.create(engine, request, settings, notices)
        token = logs.current_run_id.set(run_id)
        wakes = [w for w in (request.on_commit, delivery and delivery.wake) if w is not None]

        def on_commit() -> None:
            for wake in wakes:
                wake()

        try:
            summary = await drive(
                engine, loaded, request, run_id, stop, notices, on_start, key_id, secret, on_commit
            )
            summary.violations = await _violations(engine, run_id)
            if delivery is not None:
                # the run's last events (run.finished) are in: a bounded last pass
                summary.delivery = report_rows(await delivery.finish(drain=not stop.is_set()))
            return summary
        finally:
            logs.current_run_id.reset(token)


async def _violations(engine: AsyncEngine, run_id: int) -> dict[str, int] | None:
    try:
        async with engine.connect() as conn:
            return await violation_reads.run_counts(conn, run_id)
    except Exception as exc:  # the run is over and recorded: only its summary lacks them
        log.warning("violations of run %d not read: %s", run_id, describe_db_error(exc))
        return None
