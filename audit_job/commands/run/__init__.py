"""The audit run: snapshot the pairs, work through them, record how it ended.

`execute` runs one to its end, in four steps, one module each:

- `start.py`: create a new run, resume an unfinished one, or join a live one (the
  liveness rule, also used by the daemon);
- `snapshot.py`: the pairs a new run will check (and `plan`, for `run --dry-run`);
- `drive.py`: this worker's limiter, client and pipeline, run to the end;
- `finish.py`: the run's final status and message, and the summary handed back.

`types.py` holds what a caller passes in and gets back (RunRequest, RunHandle, RunSummary).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from audit_job import logs
from audit_job.commands.database import open_database
from audit_job.commands.run import start
from audit_job.commands.run.drive import drive
from audit_job.commands.run.snapshot import SNAPSHOT_PARTS, plan
from audit_job.commands.run.types import RunHandle, RunRequest, RunSummary
from audit_job.config import LoadedConfig

__all__ = ["SNAPSHOT_PARTS", "RunHandle", "RunRequest", "RunSummary", "execute", "plan"]


async def execute(
    loaded: LoadedConfig,
    request: RunRequest,
    stop: asyncio.Event,
    *,
    on_start: Callable[[RunHandle], None] | None = None,
) -> RunSummary:
    """Run (or resume, or join) an audit to its end; never raises for per-pair errors."""
    settings = loaded.settings
    key_id, secret = loaded.require_credentials()
    logs.register_secret(secret)
    async with open_database(settings, pool_size=4) as engine:
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
        try:
            return await drive(
                engine, loaded, request, run_id, stop, notices, on_start, key_id, secret
            )
        finally:
            logs.current_run_id.reset(token)
