"""The rows of schedule slots that run no audit (`skipped_overlap`, `missed`).

Each is written in its own transaction under the fence (a node that no longer leads
writes nothing) and at most once per slot (`scheduled_for` is unique: a slot another
node accounted for already is left alone). A written row moves the slot counters of
/metrics and logs one line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

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


class SlotRows:
    def __init__(self, metrics: DaemonMetrics) -> None:
        self.metrics = metrics
        self.engine: AsyncEngine | None = None

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
