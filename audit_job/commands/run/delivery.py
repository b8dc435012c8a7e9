"""Delivery beside a run: with `[[sink]]` blocks configured, a run delivers its own events.

    start ── every sink looks once (what earlier runs left) ──┐
    each committed batch ── wake() ── every idle sink looks ──┤ one loop per sink
    the run's end ── finish() ── a last pass, bounded by ─────┘ (Deliverer.drain_guarded)
                                 `[events] drain_seconds`

A sink's failure never fails the run: the deliverer records it (`audit-job events sinks`),
one line per sink says what is left at the end, and whatever was not delivered stays in
the feed for the next run, the daemon or `audit-job events deliver`. The deliverer has
its own small connection pool, so a slow receiver never holds a connection the run's
writer needs; and the leases keep a daemon or `events deliver --follow` from sending the
same sink at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from audit_job.config import Settings
from audit_job.events.deliver import Deliverer, SinkReport
from audit_job.events.sinks import Sink
from audit_job.store.engine import opened

log = logging.getLogger(__name__)
STOP_GRACE_SECONDS = 2.0  # past the drain's bound: a send in flight gets this long, then cancel
DONE = ("drained", "busy")  # busy: another deliverer (a daemon) holds the sink and sends it


class RunDelivery:
    def __init__(self, deliverer: Deliverer, drain_seconds: float) -> None:
        self.deliverer = deliverer
        self.drain_seconds = drain_seconds
        self.reports: dict[str, SinkReport] = {}
        self.delivered = {sink.name: 0 for sink in deliverer.sinks}  # over every pass
        self._wakes = {sink.name: asyncio.Event() for sink in deliverer.sinks}
        self._final = False
        self._finishing = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def finished(self) -> bool:
        return self._final

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(sink)) for sink in self.deliverer.sinks]
        self.wake()

    def wake(self) -> None:
        """A batch was committed: every idle sink looks for its new events."""
        for event in self._wakes.values():
            event.set()

    async def _loop(self, sink: Sink) -> None:
        wake, failures = self._wakes[sink.name], 0
        while True:
            await wake.wait()
            wake.clear()
            final = self._final
            try:
                report = await self.deliverer.drain_guarded(sink, self._stop)
            except Exception as exc:  # a sink never fails the run
                report = SinkReport(sink.name, sink.kind, "error", error=str(exc)[:300])
            self.reports[sink.name] = report
            self.delivered[sink.name] += report.delivered
            if final or report.outcome == "stopped":
                return
            if report.outcome in DONE or report.outcome == "failing":
                failures = 0
                continue
            failures += 1  # gave up for now, or the database was away: back off
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._finishing.wait(), max(1.0, self.deliverer.backoff(failures))
                )

    async def finish(self, *, drain: bool) -> list[SinkReport]:
        """A last pass over every sink (at most `drain_seconds`), or (not `drain`: the run
        was asked to stop) none: each loop ends as soon as it can."""
        drain = drain and self.drain_seconds > 0
        self._final = True
        self._finishing.set()
        if not drain:
            self._stop.set()
        self.wake()
        bound = self.drain_seconds if drain else STOP_GRACE_SECONDS
        _, late = await asyncio.wait(self._tasks, timeout=bound)
        if late:
            self._stop.set()
            _, late = await asyncio.wait(late, timeout=STOP_GRACE_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        reports = [
            self.reports.get(sink.name) or SinkReport(sink.name, sink.kind, "stopped")
            for sink in self.deliverer.sinks
        ]
        for report in reports:
            report.delivered = self.delivered[report.name]
            if report.outcome not in DONE:
                _log_left(report, timed_out=bool(late) or not drain)
        return reports


def _log_left(report: SinkReport, *, timed_out: bool) -> None:
    why = {
        "failing": f"failing ({report.error}); after fixing it: audit-job events retry "
        f"{report.name}",
        "gave_up": f"receiver unavailable ({report.error})",
        "error": f"database error ({report.error})",
        "lost": "its lease was taken over",
        "stopped": "stopped before it was done" if timed_out else "not drained",
    }[report.outcome]
    pending = "some" if report.pending is None else str(report.pending)
    log.warning(
        "sink %s: %s; %s events wait for the next run, the daemon or: audit-job events deliver",
        report.name,
        why,
        pending,
        extra={"event": "sink_left_pending"},
    )


@contextlib.asynccontextmanager
async def beside_run(settings: Settings, enabled: bool) -> AsyncIterator[RunDelivery | None]:
    """A RunDelivery going (None with no sink configured, or not `enabled`). A sink's
    configuration error (a missing signing secret) raises here, before the run starts."""
    if not enabled or not settings.sink:
        yield None
        return
    async with (
        opened(
            settings.database.url,
            connect_timeout_seconds=settings.database.connect_timeout_seconds,
            pool_size=2,
        ) as engine,
        Deliverer(engine, settings) as deliverer,
    ):
        delivery = RunDelivery(deliverer, settings.events.drain_seconds)
        delivery.start()
        try:
            yield delivery
        finally:
            if not delivery.finished:  # the run raised: stop at once, nothing is lost
                await delivery.finish(drain=False)


def report_rows(reports: list[SinkReport]) -> list[dict[str, Any]]:
    """What the run summary shows per sink."""
    return [
        {
            "sink": r.name,
            "outcome": r.outcome,
            "delivered": r.delivered,
            "pending": r.pending,
            "error": r.error,
        }
        for r in reports
    ]
