"""What every command family shares: the loaded config, the event loop, output helpers.

The configuration (pydantic, ~0.2 s) and asyncio (with ssl, ~40 ms) are imported when a
command first needs them: every process loads this module, `--help` included; the modules
of the command families import asyncio inside the functions that use it, for the same
reason."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from audit_job.config import LoadedConfig

T = TypeVar("T")
log = logging.getLogger("audit_job")


@dataclass
class Globals:
    config_path: str | None
    verbose: bool
    log_format: str
    loaded: LoadedConfig | None = None


def loaded_config(ctx: typer.Context) -> LoadedConfig:
    """Load and validate the configuration once per process; warn about what it found."""
    root = ctx.find_root()
    globals_: Globals = root.obj
    if globals_.loaded is None:
        from audit_job import config

        globals_.loaded = config.load(globals_.config_path)
        for warning in globals_.loaded.warnings:
            log.warning("%s", warning, extra={"event": "config_warning"})
    return globals_.loaded


def globals_of(ctx: typer.Context) -> Globals:
    return ctx.find_root().obj


def _loop_factory() -> Any:
    try:
        import uvloop  # optional extra: `pip install audit-job[fast]`
    except ImportError:
        return None
    return uvloop.new_event_loop


# A run allocates a few container objects per request that live until their batch is
# written, so the young generation fills every ~1 ms and each full collection walks every
# object the imports made. Measured over 100,000 checks on SQLite: 939 young and 7 full
# collections, 0.8 CPU s (about 8 % of the run); with the imports frozen and this
# threshold, fewer than 10 collections, under 0.01 s. Peak memory does not change.
GC_YOUNG_THRESHOLD = 10_000
_gc_tuned = False


def _tune_gc() -> None:
    """Once per process, after the imports and before the first event loop: whatever
    exists now lives as long as the process, so the collector stops scanning it."""
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def report_loop_error(loop: Any, context: dict[str, Any]) -> None:
    """What the event loop reports by itself (a callback that raised, an exception no task
    retrieved): one log line, or the loop's own report with its traceback under --verbose.
    Whatever raced, no traceback reaches the user unasked."""
    if log.isEnabledFor(logging.DEBUG):
        loop.default_exception_handler(context)
        return
    text = context.get("message") or "unhandled error"
    exc = context.get("exception")
    if isinstance(exc, BaseException):
        text += f": {type(exc).__name__}: {exc}"
    log.warning("event loop: %s", " ".join(text.split()), extra={"event": "loop_error"})


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio

    _tune_gc()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.get_loop().set_exception_handler(report_loop_error)
        return runner.run(coro)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def exit_with(code: int) -> None:
    if code:
        raise typer.Exit(code)
