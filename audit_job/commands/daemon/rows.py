"""The rows of schedule slots that run no audit (`skipped_overlap`, `missed`).

Each is written in its own transaction under the fence (a node that no longer leads
writes nothing), with its event (`slot.skipped`, `slot.missed`: store/leader.record_slot),
and at most once per slot (`scheduled_for` is unique: a slot another
node accounted for already is left alone). A written row moves the slot counters of
/metrics and logs one line.

A takeover accounts for every slot after the latest slot row, so a row must never be
written for a slot while an earlier one still waits for its row: if this node stopped
leading in between, the earlier slot would be left without any. Such rows are held back
(`HeldRows`) while a takeover accounts for the slots so far, and while a slot's run
waits for an interrupted run to be resumed first; they are written once the earlier
slot has its row, and dropped if leadership is lost first (the next takeover accounts
for them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.commands.daemon.slots import Gap
from audit_job.errors import FencedOut
from audit_job.metrics import DaemonMetrics
from audit_job.models import RunStatus
from audit_job.store import leader as lease_store
from audit_job.store.engine import describe_db_error

log = logging.getLogger("audit_job.commands.daemon")


@dataclass(frozen=True)
class SlotRow:
    slot: datetime
    status: RunStatus
    message: str
    missed: Gap | None = None  # (first, last, count) summarised on a `missed` row


class HeldRows:
    """Rows waiting for an earlier slot's row. Each hold has a token, so a takeover or a
    run of an older leadership cannot end a newer hold."""

    def __init__(self) -> None:
        self._token = 0
        self._closed = False
        self._rows: list[SlotRow] = []

    @property
    def holding(self) -> bool:
        return self._closed

    def start(self) -> int:
        """Hold the rows from now on (what an older hold kept is dropped); the token."""
        self._token += 1
        self._closed, self._rows = True, []
        return self._token

    def hold(self, row: SlotRow) -> bool:
        if self._closed:
            self._rows.append(row)
        return self._closed

    def end(self, token: int, accounted: datetime | None) -> list[SlotRow]:
        """The earlier slots have their rows, up to `accounted`: the held rows of later
        slots, to write now (those up to `accounted` have theirs already)."""
        if token != self._token or not self._closed:
            return []
        rows, self._rows, self._closed = self._rows, [], False
        return [r for r in rows if accounted is None or r.slot > accounted]

    def drop(self, token: int | None = None) -> None:
        """Give up the hold (`token`'s, or whichever) and what it kept."""
        if token is None or token == self._token:
            self._token += 1
            self._closed, self._rows = False, []


Spawn = Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]


class SlotRows:
    def __init__(self, metrics: DaemonMetrics, spawn: Spawn) -> None:
        self.metrics = metrics
        self.spawn = spawn  # background writes, cancelled at shutdown
        self.engine: AsyncEngine | None = None
        self.held = HeldRows()

    def account(self, epoch: int | None, row: SlotRow) -> None:
        """A slot row from the scheduler: held back, or written in the background when
        this node leads (`epoch`), or left to the leader."""
        if not self.held.hold(row) and epoch is not None:
            self.spawn(self.record(epoch, row))

    def release(self, epoch: int, token: int, accounted: datetime | None) -> None:
        """The slots up to `accounted` have their rows: write the rows held back."""
        for row in self.held.end(token, accounted):
            self.spawn(self.record(epoch, row))

    async def record(self, epoch: int, row: SlotRow) -> None:
        assert self.engine is not None
        slot = row.slot.isoformat()
        try:
            async with self.engine.begin() as conn:
                await lease_store.check_fence(conn, epoch)
                done = await lease_store.record_slot(
                    conn, row.slot, row.status, row.message, epoch=epoch, missed=row.missed
                )
        except FencedOut as exc:
            log.warning("%s", exc, extra={"event": "fenced_out"})
            return
        except Exception as exc:
            log.error("slot %s not recorded: %s", slot, describe_db_error(exc))
            return
        if not done:
            return
        if row.status is RunStatus.SKIPPED_OVERLAP:
            self.metrics.skipped_slots += 1
            log.warning("slot %s skipped: %s", slot, row.message, extra={"event": row.status})
        else:
            self.metrics.missed_slots += row.missed[2] if row.missed else 1
            log.warning("slot %s: %s", slot, row.message, extra={"event": row.status})
