"""One worker's share of a run: claim pending rows -> check them -> write answers back.

    feeder ──queue──> N check tasks ──buffer──> writer (batch_size rows or ~1 s, one
    transaction each)          heartbeat (run + worker liveness, rate share, stall watch)

Memory is bounded: at most `claim_size` claimed rows wait in the queue and the buffer
applies back-pressure at a few batches, so a million-pair run never holds its pairs.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.errors import ApiError, FencedOut, StoreUnavailable
from audit_job.models import CheckResult, Pair
from audit_job.progress_counters import Progress
from audit_job.store import results as result_store
from audit_job.store import runs as store
from audit_job.store import workers as worker_store
from audit_job.store.bulk import Claimed
from audit_job.store.engine import describe_db_error

log = logging.getLogger(__name__)
Check = Callable[[Pair], Awaitable[CheckResult]]
# sqlite3.Error: the batch statements reach the driver directly (store.bulk), unwrapped.
_STORE_ERRORS = (
    DBAPIError,
    SQLAlchemyError,
    sqlite3.Error,
    OSError,
    ConnectionError,
    TimeoutError,
)


class End(StrEnum):
    DONE = "done"  # no pending rows left for this worker
    STOPPED = "stopped"  # a signal (or the daemon) asked to stop
    API_FAILED = "api_failed"  # credentials or TLS rejected: retrying cannot help
    STORE_FAILED = "store_failed"  # the database stayed away longer than write_retry_seconds
    FENCED = "fenced"  # a newer leader exists; this node must write nothing more
    STALLED = "stalled"  # no answer written for stall_timeout_seconds


@dataclass(frozen=True)
class PipelineSettings:
    concurrency: int
    batch_size: int
    claim_size: int
    heartbeat_seconds: float
    dead_after_seconds: float
    write_retry_seconds: float
    stall_timeout_seconds: float
    stop_grace_seconds: float
    flush_seconds: float = 1.0


@dataclass
class PipelineResult:
    end: End
    error: BaseException | None = None


class Pipeline:
    def __init__(
        self,
        engine: AsyncEngine,
        run_id: int,
        worker_id: str,
        check: Check,
        settings: PipelineSettings,
        progress: Progress,
        *,
        owner: bool = True,
        fence: store.Fence | None = None,
        on_live_workers: Callable[[int], None] | None = None,
        judging: result_store.Judging | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.run_id = run_id
        self.worker_id = worker_id
        self.check = check
        self.settings = settings
        self.progress = progress
        self.owner = owner
        self.fence = fence
        self.on_live_workers = on_live_workers
        self.judging = judging  # how answers meet expectations (the writer's feed)
        self.on_commit = on_commit  # wakes the event deliverer: the batch's events are in
        self._queue: asyncio.Queue[Claimed | None] = asyncio.Queue(maxsize=settings.claim_size)
        self._buffer: list[result_store.ResultRow] = []
        self._flush_now = asyncio.Event()
        self._room = asyncio.Event()
        self._after_id = 0  # keyset position of the claims (SQLite: one worker, no claims stored)
        self._low_water = settings.concurrency  # claim again when the queue is this short
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        self._stopping = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_write = time.monotonic()
        self._stalled = asyncio.Event()

    # -- the whole thing ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> PipelineResult:
        feeder = asyncio.create_task(self._feed(stop), name="feeder")
        workers = [
            asyncio.create_task(self._work(), name=f"check-{n}")
            for n in range(self.settings.concurrency)
        ]
        writer = asyncio.create_task(self._write_loop(), name="writer")
        beat = asyncio.create_task(self._beat_loop(), name="heartbeat")
        stop_wait = asyncio.create_task(stop.wait(), name="stop")
        stall_wait = asyncio.create_task(self._stalled.wait(), name="stall")
        result: PipelineResult | None = None
        watch = {feeder, writer, stop_wait, stall_wait, *workers}
        try:
            while result is None:
                done, _ = await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
                watch -= done
                result = self._verdict(done, workers, stop_wait, stall_wait)
        finally:
            await self._shut_down(result, feeder, workers, writer, beat, stop_wait, stall_wait)
        # The final flush happens during shutdown; its failure outranks a clean end.
        flush_error = writer.exception() if writer.done() and not writer.cancelled() else None
        if flush_error is not None and result.end in (End.DONE, End.STOPPED, End.STALLED):
            return self._store_failure(flush_error)
        return result

    def _verdict(self, done, workers, stop_wait, stall_wait) -> PipelineResult | None:  # type: ignore[no-untyped-def]
        for task in done:
            if task in (stop_wait, stall_wait) or task.cancelled():
                continue
            exc = task.exception()
            if exc is None:
                continue
            if isinstance(exc, ApiError):
                return PipelineResult(End.API_FAILED, exc)
            if isinstance(exc, FencedOut):
                return PipelineResult(End.FENCED, exc)
            if isinstance(exc, StoreUnavailable):
                return PipelineResult(End.STORE_FAILED, exc)
            raise exc
        if stall_wait in done:
            return PipelineResult(End.STALLED)
        if stop_wait in done:
            return PipelineResult(End.STOPPED)
        if all(w.done() for w in workers):
            return PipelineResult(End.DONE)
        return None

    def _store_failure(self, exc: BaseException | None) -> PipelineResult:
        if isinstance(exc, FencedOut):
            return PipelineResult(End.FENCED, exc)
        return PipelineResult(End.STORE_FAILED, exc)

    async def _shut_down(
        self, result, feeder, workers, writer, beat, stop_wait, stall_wait
    ) -> None:  # type: ignore[no-untyped-def]
        feeder.cancel()
        stop_wait.cancel()
        stall_wait.cancel()
        end = result.end if result else None  # None: an error of ours, or a cancellation
        self._stopping = True  # no check task starts another pair from here on
        if end in (End.STOPPED, End.STALLED, End.API_FAILED) and self._in_flight:
            # Let requests in flight finish (bounded), so their answers are kept. After a
            # run-level API failure their answers are dropped, but cancelling them would
            # race with their connections: a TLS handshake that failed just before the
            # cancellation leaves an exception no task retrieves, which the event loop
            # reports with a traceback. They end fast: the same rejection, or an answer.
            try:
                await asyncio.wait_for(self._idle.wait(), self.settings.stop_grace_seconds)
            except TimeoutError:
                log.warning(
                    "%d requests still in flight after %.0f s; they stay pending for a resume",
                    self._in_flight,
                    self.settings.stop_grace_seconds,
                    extra={"event": "stop_grace_expired"},
                )
        for task in workers:
            task.cancel()
        await asyncio.gather(feeder, *workers, return_exceptions=True)
        self._closing = True
        self._flush_now.set()
        if not writer.done():
            # The final flush must survive a cancellation of the caller.
            await asyncio.shield(asyncio.gather(writer, return_exceptions=True))
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)

    # -- feeder ------------------------------------------------------------------------------

    def _claim_size(self) -> int:
        """About half a second of work at the pace seen so far: a worker sitting on
        claimed rows is what leaves its peers idle at the end of a shared run."""
        settings = self.settings
        floor = min(settings.claim_size, 2 * settings.concurrency)
        return max(floor, min(settings.claim_size, int(self.progress.rate() * 0.5)))

    async def _feed(self, stop: asyncio.Event) -> None:
        queue = self._queue
        while not stop.is_set():
            # Claim again when half a claim is left, and only what fits: the next rows
            # arrive while the checkers work through the other half (a claim on
            # PostgreSQL takes tens of milliseconds, more than `concurrency` rows last).
            while queue.qsize() > self._low_water:
                self._room.clear()
                await self._room.wait()
            if stop.is_set():
                break
            target = self._claim_size()
            self._low_water = max(self.settings.concurrency, target // 2)
            size = target - queue.qsize()
            if size <= 0:  # the pace dropped: wait for the new, lower mark
                continue
            rows = await self._with_store_retry(self._claim, size)
            if not rows:
                if not await self._with_store_retry(self._others_hold_rows):
                    break
                await asyncio.sleep(1.0)  # another worker holds rows; it may die
                continue
            for row in rows:
                await self._queue.put(row)
        # One stop marker per check task, queued behind the rows (on failure or stop the
        # check tasks are cancelled instead).
        for _ in range(self.settings.concurrency):
            await self._queue.put(None)

    async def _claim(self, size: int) -> list[Claimed]:
        async with self.engine.begin() as conn:
            if self.fence is not None:
                await self.fence(conn)
            rows = await worker_store.claim_pending(
                conn,
                self.run_id,
                self.worker_id,
                self.settings.dead_after_seconds,
                size,
                self._after_id,
            )
        if rows:
            self._after_id = rows[-1][0]
        return rows

    async def _others_hold_rows(self) -> bool:
        async with self.engine.connect() as conn:
            return await worker_store.pending_elsewhere(conn, self.run_id, self.worker_id)

    # -- checkers ----------------------------------------------------------------------------

    async def _work(self) -> None:
        queue, buffer, progress = self._queue, self._buffer, self.progress
        batch_size = self.settings.batch_size
        limit = batch_size * 4
        while True:
            item = await queue.get()
            if queue.qsize() <= self._low_water:
                self._room.set()
            if item is None or self._stopping:
                return
            row_id, app_id, user_id, expect = item
            self._in_flight += 1
            self._idle.clear()
            try:
                result = await self.check(Pair(app_id, user_id))
            finally:
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.set()
            buffer.append((row_id, app_id, user_id, result, expect))
            progress.add(result)
            if len(buffer) >= batch_size:
                self._flush_now.set()
                while len(buffer) >= limit:  # the writer is behind (database slow or away)
                    self._drained.clear()
                    await self._drained.wait()

    # -- writer ------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        settings = self.settings
        while True:
            if not self._closing:
                try:
                    await asyncio.wait_for(self._flush_now.wait(), settings.flush_seconds)
                except TimeoutError:
                    pass
            self._flush_now.clear()
            while self._buffer:
                batch = self._buffer[: settings.batch_size]
                del self._buffer[: len(batch)]
                self._drained.set()
                await self._with_store_retry(self._write, batch)
            if self._closing:
                return

    async def _write(self, batch: list[result_store.ResultRow]) -> None:
        retries = sum(row[3].attempts - 1 for row in batch)
        throttled = sum(row[3].throttled for row in batch)
        async with self.engine.begin() as conn:
            if self.fence is not None:
                await self.fence(conn)  # raises FencedOut: the whole batch rolls back
            await result_store.write_results(
                conn,
                self.run_id,
                batch,
                retries=retries,
                throttled=throttled,
                judging=self.judging,
            )
        self.progress.written += len(batch)
        self._last_write = time.monotonic()
        if self.on_commit is not None:
            self.on_commit()

    async def _with_store_retry(self, action, *args):  # type: ignore[no-untyped-def]
        """Retry a database step with backoff for up to write_retry_seconds, then give up
        with StoreUnavailable (the run stays resumable: unwritten rows stay pending)."""
        deadline = time.monotonic() + self.settings.write_retry_seconds
        delay = 0.2
        while True:
            try:
                return await action(*args)
            except FencedOut:
                raise
            except _STORE_ERRORS as exc:
                if time.monotonic() >= deadline:
                    raise StoreUnavailable(
                        f"{describe_db_error(exc)}; gave up after "
                        f"{self.settings.write_retry_seconds:.0f} s"
                    ) from exc
                log.warning(
                    "database error, retrying in %.1f s: %s",
                    delay,
                    describe_db_error(exc),
                    extra={"event": "store_retry"},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- heartbeat ---------------------------------------------------------------------------

    async def _beat_loop(self) -> None:
        settings = self.settings
        while True:
            await asyncio.sleep(settings.heartbeat_seconds)
            try:
                async with self.engine.begin() as conn:
                    await worker_store.beat(conn, self.run_id, self.worker_id, owner=self.owner)
                    live = await worker_store.live_workers(
                        conn, self.run_id, settings.dead_after_seconds
                    )
            except _STORE_ERRORS as exc:
                log.warning(
                    "heartbeat failed: %s",
                    describe_db_error(exc),
                    extra={"event": "heartbeat_failed"},
                )
                continue
            if self.on_live_workers is not None:
                self.on_live_workers(len({*live, self.worker_id}))
            quiet = time.monotonic() - self._last_write
            if (self._in_flight or self._buffer) and quiet > settings.stall_timeout_seconds:
                log.error(
                    "no answer written for %.0f s; interrupting the run",
                    quiet,
                    extra={"event": "run_stalled"},
                )
                self._stalled.set()
