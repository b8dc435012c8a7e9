"""What the daemon's /healthz and /metrics answer (served by audit_job.health).

/healthz is 200 while the scheduler runs and the last leadership check reached the
database, 503 with the reason otherwise; 200 `degraded: ...` when a sink is failing (a
receiver refused events for good: delivery to it waits for `audit-job events retry`,
the audits go on, so a restart would not help). /metrics reads the freshness of each
app's state, the open violations and each sink's pending events from the database at
scrape time (at most 2 s; the other figures live in memory).
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
from audit_job.commands.events import pending_counts
from audit_job.config import Settings
from audit_job.metrics import DaemonMetrics
from audit_job.store import leader as lease_store
from audit_job.store import sinks as sink_store
from audit_job.store import violation_reads
from audit_job.store.types import utcnow

log = logging.getLogger("audit_job.commands.daemon")


class Endpoint:
    def __init__(
        self,
        metrics: DaemonMetrics,
        leadership: Leadership,
        schedule: Schedule,
        db_error: Callable[[], str | None],
        settings: Settings,
    ) -> None:
        self.metrics = metrics
        self.leadership = leadership
        self.schedule = schedule
        self.db_error = db_error
        self.settings = settings
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
        failing = await self._failing_sinks()
        if failing:
            names = ", ".join(failing)
            return True, (
                f"degraded: sink {names} failing (refused events for good; after fixing "
                f"the receiver: audit-job events retry NAME); {role}"
            )
        return True, f"ok: {role}, next fire at {self.schedule.next_fire()}"

    async def _failing_sinks(self) -> list[str]:
        """The configured sinks marked failing (names only: no URL, no error text)."""
        if self.engine is None or not self.settings.sink:
            return []
        try:
            async with asyncio.timeout(2), self.engine.connect() as conn:
                states = await sink_store.states(conn)
        except Exception as exc:
            log.debug("sink states not read: %s", exc)
            return [name for name, bad in self.metrics.sinks_failing.items() if bad]
        configured = [sink.name for sink in self.settings.sink]
        return [name for name in configured if name in states and states[name].failing]

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
            await self._read_feed()
        return self.metrics.render()

    async def _read_feed(self) -> None:
        assert self.engine is not None
        try:
            async with asyncio.timeout(2), self.engine.connect() as conn:
                self.metrics.open_violations = await violation_reads.open_counts(conn)
                if self.settings.sink:
                    self.metrics.events_pending = await pending_counts(conn, self.settings)
                    states = await sink_store.states(conn)
                    self.metrics.sinks_failing = {
                        sink.name: bool(states.get(sink.name) and states[sink.name].failing)
                        for sink in self.settings.sink
                    }
        except Exception as exc:
            log.debug("violations and sinks not read: %s", exc)
