"""The daemon's delivery: while this node leads, a Deliverer follows the feed and keeps
every `[[sink]]` drained; it stops when the node steps down.

    Gained ──> start(): Deliverer.run on its own small pool (the lease's connections
               stay free), woken after each committed batch of the leader's runs
    SteppedDown / stopping ──> stop(): the follow loops end at their next step

Only the leader delivers; between nodes the sinks' own leases (store/sinks.py) are what
exclude a second sender: a new leader takes a sink over once the old holder released it
(a clean step-down), its lease expired, or its process is gone (on this host). A batch
the old leader sent but whose acknowledgement it did not record is sent again:
at-least-once, in id order, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from audit_job.config import Settings
from audit_job.events.deliver import Deliverer, build_sinks
from audit_job.store.engine import create_engine, describe_db_error

log = logging.getLogger("audit_job.commands.daemon")
STOP_GRACE_SECONDS = 5.0  # a send in flight when stepping down, then it is cancelled
RETRY_SECONDS = 5.0  # the deliverer could not start (database away): try again


class LeaderDelivery:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._deliverer: Deliverer | None = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.settings.sink)

    def check(self) -> None:
        """A sink's configuration error (a missing signing secret) at start: ConfigError."""
        if self.enabled:
            build_sinks(self.settings, os.environ)

    def wake(self) -> None:
        if self._deliverer is not None:
            self._deliverer.wake()

    def start(self) -> None:
        if not self.enabled:
            return
        previous = self._task
        if previous is not None and not previous.done():
            assert self._stop is not None
            if not self._stop.is_set():
                return  # delivering already
        else:
            previous = None  # a step-down's loops still ending: the new ones follow them
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._deliver(self._stop, previous), name="delivery")

    async def stop(self) -> None:
        task, stop = self._task, self._stop
        if task is None or stop is None:
            return
        stop.set()
        _, late = await asyncio.wait({task}, timeout=STOP_GRACE_SECONDS)
        if late:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self._task = None

    def step_down(self) -> None:
        """Leadership lost: stop delivering (without waiting here)."""
        if self._stop is not None:
            self._stop.set()

    async def _deliver(self, stop: asyncio.Event, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        database = self.settings.database
        engine = create_engine(
            database.url,
            connect_timeout_seconds=min(database.connect_timeout_seconds, 5),
            pool_size=2,
        )
        log.info("delivering events as the leader", extra={"event": "delivery_started"})
        try:
            while not stop.is_set():
                try:
                    async with Deliverer(engine, self.settings) as deliverer:
                        self._deliverer = deliverer
                        await deliverer.run(stop)
                except Exception as exc:  # the daemon goes on; delivery starts again
                    log.error(
                        "event delivery stopped: %s; starting it again in %.0f s",
                        describe_db_error(exc) if str(exc) else type(exc).__name__,
                        RETRY_SECONDS,
                        extra={"event": "delivery_error"},
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), RETRY_SECONDS)
                finally:
                    self._deliverer = None
        finally:
            await engine.dispose()
            log.info("event delivery stopped", extra={"event": "delivery_stopped"})
