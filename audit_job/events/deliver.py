"""The deliverer: drains every sink from its cursor, batch by batch, in id order.

Per sink and pass: take the sink's lease, read the events after its cursor (up to the
feed's head, of the sink's types), send a batch, and move the cursor past it only once
the sink acknowledged it; repeat until nothing is left. Events a sink's `types` filter
leaves out are passed over by the same cursor. A transient failure is retried with
backoff and jitter (Retry-After honoured) up to the sink's `max_attempts`, then the pass
gives up on that sink (its cursor unchanged); a permanent refusal marks the sink failing
until `audit-job events retry NAME`. Sinks are independent: one failing or slow sink
never holds another back.

Guarantee: at-least-once delivery in id order per sink. A batch is sent again only when
its acknowledgement was not recorded (the process died, the lease was lost, or the
database was away between the receiver's 2xx and the cursor's update).

`drain_once()` is one pass over every sink (`audit-job events deliver`, cron); `run()`
keeps every sink drained until stopped, woken by `wake()` after a commit or every
`[events] poll_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random as _random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tenacity
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.config import Settings, WebhookSinkSettings
from audit_job.errors import ConfigError
from audit_job.events import signing
from audit_job.events.sinks import JsonlSink, Permanent, Sink, Transient, WebhookSink
from audit_job.retry import RETRY_AFTER_CAP_SECONDS
from audit_job.store import events as event_store
from audit_job.store import sinks as sink_store
from audit_job.store.events import EventRow

log = logging.getLogger(__name__)
DATABASE_ERRORS = (SQLAlchemyError, OSError, TimeoutError)


class Stopped(Exception):
    """The deliverer was asked to stop while waiting."""


class LeaseLost(Exception):
    """Another deliverer holds the sink now (this one froze past its lease)."""


@dataclass
class SinkReport:
    name: str
    kind: str
    outcome: str  # drained | failing | gave_up | busy | stopped | lost | error
    delivered: int = 0
    cursor: int = 0
    pending: int | None = None
    error: str | None = None


def build_sinks(
    settings: Settings, env: Mapping[str, str], *, clock: Callable[[], float] = time.time
) -> list[Sink]:
    """The configured sinks, their secrets read (a missing one: ConfigError, exit 2)."""
    built: list[Sink] = []
    for sink in settings.sink:
        if isinstance(sink, WebhookSinkSettings):
            key, secret_text = signing.load_key(sink.name, sink.secret_env, env)
            built.append(WebhookSink(sink, key, secret_text, clock=clock))
        else:
            folder = Path(sink.path).expanduser().parent
            if not folder.is_dir():
                raise ConfigError(f"[[sink]] {sink.name}: path: folder {folder} does not exist")
            built.append(JsonlSink(sink))
    return built


class Deliverer:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        random: Callable[[], float] = _random.random,
        owner: str | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.sinks = build_sinks(settings, os.environ if env is None else env, clock=clock)
        self.owner = owner or sink_store.new_owner()
        self.lease_seconds = settings.events.lease_seconds
        self.poll_seconds = settings.events.poll_seconds
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.random = random
        self._wakes: dict[str, asyncio.Event] = {}

    async def __aenter__(self) -> Deliverer:
        for sink in self.sinks:
            await sink.open()
        async with self.engine.begin() as conn:
            await sink_store.ensure(conn, [sink.name for sink in self.sinks])
        return self

    async def __aexit__(self, *exc: object) -> None:
        for sink in self.sinks:
            await sink.close()

    def wake(self) -> None:
        """New events were committed: every idle sink looks now."""
        for event in self._wakes.values():
            event.set()

    # --- one pass --------------------------------------------------------------------------

    async def drain_once(self, stop: asyncio.Event | None = None) -> list[SinkReport]:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self.drain_guarded(sink, stop)) for sink in self.sinks]
        return [task.result() for task in tasks]

    async def drain_guarded(self, sink: Sink, stop: asyncio.Event | None) -> SinkReport:
        """`drain`, its expected endings turned into the report's outcome."""
        try:
            return await self.drain(sink, stop)
        except Stopped:
            return SinkReport(sink.name, sink.kind, "stopped")
        except LeaseLost:
            return SinkReport(sink.name, sink.kind, "lost")
        except DATABASE_ERRORS as exc:
            message = _database_reason(exc)
            log.error(
                "sink %s: database error: %s", sink.name, message, extra={"event": "sink_db_error"}
            )
            return SinkReport(sink.name, sink.kind, "error", error=message)

    async def drain(self, sink: Sink, stop: asyncio.Event | None = None) -> SinkReport:
        """Deliver everything after the sink's cursor (module docstring)."""
        async with self.engine.begin() as conn:
            state = await sink_store.acquire(conn, sink.name, self.owner, self.lease_seconds)
        if state is None:
            return SinkReport(sink.name, sink.kind, "busy")
        report = SinkReport(sink.name, sink.kind, "drained", cursor=state.last_event_id)
        lost = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lease(sink.name, lost))
        try:
            if state.failing:
                report.outcome, report.error = "failing", state.last_error
            else:
                await self._deliver_all(sink, report, stop, lost)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(*DATABASE_ERRORS):
                async with self.engine.begin() as conn:
                    await sink_store.release(conn, sink.name, self.owner)
        with contextlib.suppress(*DATABASE_ERRORS):
            async with self.engine.connect() as conn:
                report.pending = await event_store.count_after(
                    conn, report.cursor, types=sink.event_types
                )
        return report

    async def _deliver_all(
        self, sink: Sink, report: SinkReport, stop: asyncio.Event | None, lost: asyncio.Event
    ) -> None:
        while True:
            if stop is not None and stop.is_set():
                report.outcome = "stopped"
                return
            async with self.engine.connect() as conn:
                top = await event_store.head(conn)
                rows = await event_store.read_after(
                    conn,
                    report.cursor,
                    limit=sink.batch_size,
                    upto_id=top,
                    types=sink.event_types,
                )
            if not rows:
                # Only events the sink's filter leaves out (or none): pass over them.
                if top > report.cursor and not await self._advance(sink, report, top, 0):
                    report.outcome = "lost"
                return
            try:
                await self._send(sink, rows, stop, lost)
            except Permanent as exc:
                report.outcome, report.error = "failing", exc.message
                log.error(
                    "sink %s refused events %d-%d for good: %s; it stops until: "
                    "audit-job events retry %s",
                    sink.name,
                    rows[0].id,
                    rows[-1].id,
                    exc.message,
                    sink.name,
                    extra={"event": "sink_failing"},
                )
                async with self.engine.begin() as conn:
                    await sink_store.mark_failing(conn, sink.name, exc.message)
                return
            except Transient as exc:
                report.outcome, report.error = "gave_up", exc.message
                log.warning(
                    "sink %s: gave up on events %d-%d for now after %d attempts: %s",
                    sink.name,
                    rows[0].id,
                    rows[-1].id,
                    sink.max_attempts,
                    exc.message,
                    extra={"event": "sink_gave_up"},
                )
                return
            if not await self._advance(sink, report, rows[-1].id, len(rows)):
                report.outcome = "lost"
                log.warning(
                    "sink %s: lost its lease; events %d-%d may be sent again by its new holder",
                    sink.name,
                    rows[0].id,
                    rows[-1].id,
                    extra={"event": "sink_lease_lost"},
                )
                return
            log.debug(
                "sink %s: delivered events %d-%d",
                sink.name,
                rows[0].id,
                rows[-1].id,
                extra={"event": "events_delivered"},
            )

    async def _advance(self, sink: Sink, report: SinkReport, to_id: int, count: int) -> bool:
        async with self.engine.begin() as conn:
            moved = await sink_store.advance(
                conn, sink.name, self.owner, from_id=report.cursor, to_id=to_id, delivered=count
            )
        if moved:
            report.cursor = to_id
            report.delivered += count
        return moved

    async def _send(
        self,
        sink: Sink,
        rows: Sequence[EventRow],
        stop: asyncio.Event | None,
        lost: asyncio.Event,
    ) -> None:
        async def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            message = getattr(error, "message", str(error))
            log.warning(
                "sink %s: attempt %d for events %d-%d failed: %s",
                sink.name,
                state.attempt_number,
                rows[0].id,
                rows[-1].id,
                message,
                extra={"event": "sink_retry"},
            )
            with contextlib.suppress(*DATABASE_ERRORS):
                async with self.engine.begin() as conn:
                    await sink_store.record_retry(conn, sink.name, message)

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(sink.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(Transient),
            sleep=self._sleeper(stop, lost),
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await sink.send(rows)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), RETRY_AFTER_CAP_SECONDS)
        return self.backoff(state.attempt_number)

    def backoff(self, failures: int) -> float:
        """Full jitter: uniform(0, min(cap, base * 2 ** (failures - 1)))."""
        exponent = min(max(0, failures - 1), 32)
        return self.random() * min(self.backoff_cap, self.backoff_base * 2.0**exponent)

    def _sleeper(self, stop: asyncio.Event | None, lost: asyncio.Event) -> Callable[[float], Any]:
        async def sleep(seconds: float) -> None:
            if lost.is_set():
                raise LeaseLost
            if stop is None:
                await asyncio.sleep(seconds)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
                raise Stopped

        return sleep

    async def _keep_lease(self, name: str, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                async with self.engine.begin() as conn:
                    held = await sink_store.renew(conn, name, self.owner, self.lease_seconds)
            except DATABASE_ERRORS as exc:
                log.warning(
                    "sink %s: cannot renew its lease: %s",
                    name,
                    _database_reason(exc),
                    extra={"event": "sink_lease_renew_failed"},
                )
                continue
            if not held:
                lost.set()
                return

    # --- continuous ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Keep every sink drained until `stop` is set."""
        async with asyncio.TaskGroup() as group:
            for sink in self.sinks:
                self._wakes[sink.name] = asyncio.Event()
                group.create_task(self._follow(sink, stop))

    async def _follow(self, sink: Sink, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            report = await self.drain_guarded(sink, stop)
            if report.outcome == "stopped":
                return
            if report.outcome in ("gave_up", "error", "lost"):
                failures += 1
                delay = max(self.poll_seconds, self.backoff(failures))
            else:
                failures = 0
                delay = self.poll_seconds
            if report.outcome == "drained" and report.delivered:
                continue  # more may have come in meanwhile
            wake = self._wakes[sink.name]
            waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            wake.clear()


def _database_reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return text[:300]
