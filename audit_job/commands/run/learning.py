"""The learned rate of a run: where its limiter starts, and what it leaves for the next run.

Start: the learning for (host, access key id) (store/learned_rate.py) is used when
`[audit] use_learned_rate` holds, the run was not started with `--no-learned-rate`, it is no
older than `learned_rate_days`, it was made under the same `rate_per_second`, and the server
bounded it below that cap (a learning at the cap starts the run at the cap anyway). A
worker takes its share: the rate over the live workers, as it does with the cap.

Keep: every `LEARN_EVERY_SECONDS` while the run goes, and at its end, the rate this worker
sustains times the live workers (the whole run's rate) and whether the server bounded it.
What a run can tell: the server bounded it (the rate of the last precisely measured step,
`settled_rate`, or else the rate in force), or, unbounded, a run that kept at least
`AT_CAP_SHARE` of its cap for `MIN_SECONDS` (the cap holds: the next run starts there). A
short or idle run tells nothing and leaves an earlier learning in place. The access key
secret is never passed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.config import AuditSettings
from audit_job.limiter import AdaptiveRateLimiter
from audit_job.progress_counters import Progress
from audit_job.store.learned_rate import read_learned_rate, write_learned_rate

log = logging.getLogger(__name__)
LEARN_EVERY_SECONDS = 60.0
AT_CAP_SHARE = 0.9
MIN_SECONDS = 5.0


@dataclass(frozen=True)
class Learner:
    """Where this worker's learning is kept, and under which cap."""

    host: str
    access_key_id: str
    configured_rate: float

    async def starting_rate(
        self, engine: AsyncEngine, audit: AuditSettings, use: bool
    ) -> float | None:
        """The whole run's learned rate to start at, or None (start at the cap)."""
        if not (use and audit.use_learned_rate):
            return None
        async with engine.connect() as conn:
            learning = await read_learned_rate(
                conn,
                self.host,
                self.access_key_id,
                configured_rate_per_second=self.configured_rate,
                max_age_days=audit.learned_rate_days,
            )
        if learning is None or not learning.server_bounded:
            return None
        if learning.rate_per_second >= self.configured_rate:
            return None
        return learning.rate_per_second

    def lesson(
        self, limiter: AdaptiveRateLimiter, progress: Progress, workers: int
    ) -> tuple[float, bool] | None:
        """(the whole run's sustained rate, whether the server bounded it), or None."""
        if limiter.server_bounded:
            # A precise step's rate, else the rate the server holds it at now (a run whose
            # steps were measured on few answers still converged near the limit).
            rate = limiter.settled_rate or limiter.current_rate
            return min(self.configured_rate, rate * workers), True
        elapsed = time.monotonic() - progress.started_at
        if elapsed >= MIN_SECONDS and progress.rate() >= AT_CAP_SHARE * limiter.cap:
            return self.configured_rate, False
        return None

    async def keep(
        self, engine: AsyncEngine, limiter: AdaptiveRateLimiter, progress: Progress, workers: int
    ) -> None:
        """Record what this run learned so far (a database error is logged, not raised:
        a lost learning costs the next run a few 429s, nothing more)."""
        lesson = self.lesson(limiter, progress, workers)
        if lesson is None:
            return
        rate, bounded = lesson
        try:
            async with engine.begin() as conn:
                await write_learned_rate(
                    conn,
                    self.host,
                    self.access_key_id,
                    rate_per_second=rate,
                    server_bounded=bounded,
                    configured_rate_per_second=self.configured_rate,
                )
        except Exception as exc:  # the store's errors vary by driver; none may end a run
            log.warning(
                "could not keep the learned rate: %s",
                type(exc).__name__,
                extra={"event": "learned_rate_failed"},
            )
            return
        log.debug(
            "learned rate %.1f/s (%s)",
            rate,
            "bounded by the server" if bounded else "at the cap",
            extra={"event": "learned_rate"},
        )

    async def keep_every(
        self,
        engine: AsyncEngine,
        limiter: AdaptiveRateLimiter,
        progress: Progress,
        workers: list[int],
        seconds: float = LEARN_EVERY_SECONDS,
    ) -> None:
        """During a long run: keep the learning every `seconds` (`workers[0]`: live now)."""
        while True:
            await asyncio.sleep(seconds)
            await self.keep(engine, limiter, progress, workers[0])


@contextlib.asynccontextmanager
async def keeping(
    learner: Learner,
    engine: AsyncEngine,
    limiter: AdaptiveRateLimiter,
    progress: Progress,
    workers: list[int],
):  # type: ignore[no-untyped-def]
    """While the body runs, keep the learning periodically; at its end, once more."""
    task = asyncio.create_task(learner.keep_every(engine, limiter, progress, workers))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.shield(learner.keep(engine, limiter, progress, workers[0]))
