"""Showing a run as it goes: a rich progress bar on a terminal, else a log line every
few seconds. Reads the pipeline's counters; never touches the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from audit_job.commands.run import RunHandle

log = logging.getLogger("audit_job.progress")


def _eta(remaining: int, rate: float) -> str:
    if rate <= 0:
        return "?"
    seconds = int(remaining / rate)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def describe(handle: RunHandle) -> str:
    p = handle.progress
    rate = p.rate()
    percent = 100.0 * p.done / p.total if p.total else 100.0
    return (
        f"run {handle.run_id}: {p.done}/{p.total} done ({percent:.0f}%), {rate:.1f} checks/s, "
        f"errors {p.errors}, retries {p.retries}, 429s {handle.stats.throttled}, "
        f"rate limit {handle.limiter.current_rate:.1f}/s{_in_flight(handle)}, "
        f"ETA {_eta(p.total - p.done, rate)}"
    )


def _in_flight(handle: RunHandle) -> str:
    gate = handle.gate
    return "" if gate is None else f", in flight {gate.in_flight}/{gate.limit}"


class ProgressView:
    def __init__(self, *, bar: bool, interval_seconds: float = 5.0) -> None:
        self.bar = bar
        self.interval_seconds = interval_seconds
        self.handle: RunHandle | None = None
        self._ready = asyncio.Event()

    def attach(self, handle: RunHandle) -> None:
        self.handle = handle
        self._ready.set()

    @contextlib.asynccontextmanager
    async def showing(self) -> AsyncIterator[ProgressView]:
        task = asyncio.create_task(self._bar() if self.bar else self._lines())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _lines(self) -> None:
        await self._ready.wait()
        while True:
            await asyncio.sleep(self.interval_seconds)
            assert self.handle is not None
            log.info("%s", describe(self.handle), extra={"event": "progress"})

    async def _bar(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        await self._ready.wait()
        handle = self.handle
        assert handle is not None
        columns = (
            TextColumn(f"run {handle.run_id}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>7.1f}/s"),
            TextColumn("err {task.fields[errors]}  retry {task.fields[retries]}"),
            TextColumn("429 {task.fields[throttled]}"),
            TextColumn("{task.fields[pacing]}"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
            task = bar.add_task(
                "run",
                total=handle.progress.total,
                rate=0.0,
                errors=0,
                retries=0,
                throttled=0,
                pacing="",
            )
            try:
                while True:
                    self._update(bar, task)
                    await asyncio.sleep(0.25)
            finally:
                self._update(bar, task)

    def _update(self, bar, task) -> None:  # type: ignore[no-untyped-def]
        assert self.handle is not None
        p = self.handle.progress
        bar.update(
            task,
            total=p.total,
            completed=p.done,
            rate=p.rate(),
            errors=p.errors,
            retries=p.retries,
            throttled=self.handle.stats.throttled,
            pacing=f"limit {self.handle.limiter.current_rate:.0f}/s{_in_flight(self.handle)}",
        )
