"""What the daemon's /healthz and /metrics answer (served by audit_job.health).

/healthz is 200 while the scheduler runs and the last leadership check reached the
database, 503 with the reason otherwise. /metrics reads the freshness of each app's
state from the database at scrape time (at most 2 s; the other figures live in memory).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job import health
from audit_job.commands.daemon.leadership import Leadership
from audit_job.commands.daemon.scheduler import Schedule
from audit_job.metrics import DaemonMetrics
from audit_job.store import leader as lease_store
from audit_job.store.types import utcnow

log = logging.getLogger("audit_job.commands.daemon")


class Endpoint:
    def __init__(
        self,
        metrics: DaemonMetrics,
        leadership: Leadership,
        schedule: Schedule,
        db_error: Callable[[], str | None],
    ) -> None:
        self.metrics = metrics
        self.leadership = leadership
        self.schedule = schedule
        self.db_error = db_error
        self.engine: AsyncEngine | None = None

    async def start(self, listen: str) -> web.AppRunner:
        runner = await health.start_listener(listen, self.health, self.scrape)
        log.info("listening on %s (/healthz, /metrics)", listen)
        return runner

    async def health(self) -> tuple[bool, str]:
        db_error = self.db_error()
        if db_error is not None:
            return False, f"database: {db_error}"
        if not self.schedule.running:
            return False, "scheduler not running"
        leadership = self.leadership
        role = f"leader (epoch {leadership.epoch})" if leadership.is_leader else "follower"
        return True, f"ok: {role}, next fire at {self.schedule.next_fire()}"

    async def scrape(self) -> bytes:
        if self.engine is not None:
            try:
                async with asyncio.timeout(2), self.engine.connect() as conn:
                    oldest = await lease_store.oldest_checked_per_app(conn)
                now = utcnow()
                self.metrics.freshness = {
                    app: (now - at).total_seconds() for app, at in oldest.items() if at
                }
            except Exception as exc:
                log.debug("freshness not read: %s", exc)
        return self.metrics.render()
