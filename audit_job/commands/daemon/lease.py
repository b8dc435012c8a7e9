"""The lease as I/O: a take-or-renew transaction every lease/3, its outcome fed to the
Leadership state machine (leadership.py), and the release at a clean stop.

Any error, or a check slower than lease/3, counts as "not leader" (fail closed), and
the checks back off (doubling, up to 30 s) while the database is away. On SQLite a
live lease is taken over at once: the lock file already excludes a second daemon.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.commands.daemon.leadership import Change, Leadership
from audit_job.store import leader as lease_store
from audit_job.store.engine import describe_db_error

log = logging.getLogger("audit_job.commands.daemon")
MAX_BACKOFF_SECONDS = 30.0


class Lease:
    def __init__(
        self,
        leadership: Leadership,
        node: str,
        on_changes: Callable[[list[Change]], None],
        *,
        force: bool,
    ) -> None:
        self.leadership = leadership
        self.node = node
        self.on_changes = on_changes
        self.force = force
        self.engine: AsyncEngine | None = None
        self.db_error: str | None = "no leadership check yet"  # for /healthz

    async def keep(self, stop: asyncio.Event) -> None:
        """Check (and act on the changes) until `stop`."""
        every = self.leadership.lease_seconds / 3
        delay = every
        while not stop.is_set():
            started = self.leadership.clock()
            try:
                async with asyncio.timeout(every):
                    epoch = await self._take_or_renew()
            except Exception as exc:
                self.db_error = describe_db_error(exc) if str(exc) else type(exc).__name__
                log.warning(
                    "leadership check failed, so not leader (fail closed): %s",
                    self.db_error,
                    extra={"event": "lease_error"},
                )
                delay = min(delay * 2, max(every, MAX_BACKOFF_SECONDS))
                self.on_changes(self.leadership.failed())
            else:
                self.db_error = None
                delay = every
                self.on_changes(self.leadership.checked(epoch, started))
            try:
                await asyncio.wait_for(stop.wait(), max(0.05, delay))
            except TimeoutError:
                pass

    async def _take_or_renew(self) -> int | None:
        assert self.engine is not None
        async with self.engine.begin() as conn:
            return await lease_store.take_or_renew(
                conn,
                self.node,
                self.leadership.epoch,
                self.leadership.lease_seconds,
                force=self.force,
            )

    async def release(self) -> None:
        """Give the lease up (clean stop), so a follower need not wait for it to expire."""
        epoch = self.leadership.release()
        if epoch is None or self.engine is None:
            return
        try:
            async with asyncio.timeout(2):
                async with self.engine.begin() as conn:
                    await lease_store.release(conn, self.node, epoch)
            log.info("leadership (epoch %d) released", epoch, extra={"event": "lease_released"})
        except Exception as exc:
            log.warning("could not release the lease (it expires by itself): %s", exc)
