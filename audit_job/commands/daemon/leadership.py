"""Leadership as this node sees it: a small state machine on an injected monotonic clock.

The lease loop feeds it the outcome of each take-or-renew transaction (store/leader.py);
it answers with what changed, and the daemon acts on that (account for the slots so far,
or cancel the run):

    not leader ── checked(epoch) ──────────────────────> leader(epoch)     Gained(epoch)
    leader(e) ─── checked(e), before the deadline ────> leader(e), deadline moves on
              ─── checked(e), after the deadline ─────> leader(e)  SteppedDown, Gained(e)
              ─── checked(f), another epoch ──────────> leader(f)  SteppedDown, Gained(f)
              ─── checked(None): someone else leads ──> not leader   SteppedDown
              ─── failed(): error or timeout ─────────> not leader   SteppedDown (fail closed)
              ─── step_down(reason): fenced out ──────> not leader   SteppedDown

A leader's deadline is the start of its last successful check plus the lease: past it,
the database may already have let another node take over, so `is_leader` turns false on
its own, before any check says so. A renewal that comes only after the deadline is a new
leadership all the same (slots that fired in between were dropped and must be accounted
for again).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Gained:
    epoch: int


@dataclass(frozen=True)
class SteppedDown:
    reason: str


Change = Gained | SteppedDown


class Leadership:
    def __init__(self, lease_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._epoch: int | None = None
        self._valid_until = 0.0

    @property
    def epoch(self) -> int | None:
        """The epoch this node believes it holds (renewals name it), lapsed or not."""
        return self._epoch

    @property
    def is_leader(self) -> bool:
        return self._epoch is not None and self.clock() < self._valid_until

    def holds(self, epoch: int) -> bool:
        return self.is_leader and self._epoch == epoch

    def checked(self, epoch: int | None, started: float) -> list[Change]:
        """A take-or-renew that began at `started` (on the clock) returned `epoch`."""
        if epoch is None:
            return self.step_down("the lease is lost")
        if epoch == self._epoch and self.is_leader:
            self._valid_until = started + self.lease_seconds
            return []
        if epoch == self._epoch:
            changes = self.step_down("the lease lapsed before it was renewed")
        elif self._epoch is not None:
            changes = self.step_down(f"epoch moved to {epoch}")
        else:
            changes = []
        self._epoch = epoch
        self._valid_until = started + self.lease_seconds
        return [*changes, Gained(epoch)]

    def failed(self) -> list[Change]:
        """The check raised or timed out: not leader (fail closed)."""
        return self.step_down("error")

    def step_down(self, reason: str) -> list[Change]:
        if self._epoch is None:
            return []
        self._epoch = None
        return [SteppedDown(reason)]

    def release(self) -> int | None:
        """Stop leading without a change to act on (shutting down): the epoch to release."""
        epoch, self._epoch = self._epoch, None
        return epoch
