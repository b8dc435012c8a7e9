"""Admission for attempts: at most `limit` in flight, fixed or set by the adaptive rule of
concurrency.py, waiters admitted in arrival order. Clock injected; the only timers are the
startup bound's (below) and the event loop's lateness probe (loop_lag.py)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

from audit_job.concurrency import MAX_LIMIT, AdaptiveConcurrency
from audit_job.loop_lag import LoopLag


class InFlightGate:
    """Admission for attempts: `try_acquire()` or `await acquire()` before the rate limiter,
    `release(latency)` after the answer (latency None when there was no answer).

    A fixed `limit`, or an `AdaptiveConcurrency` rule fed by the releases and reading the
    rate limiter's current rate (`rate`). Waiters are admitted in arrival order; a slot freed
    goes to the first waiter at once, so a newcomer never overtakes it. The limit may be
    changed at runtime (`set_limit`); lowering it lets the extra requests finish.
    """

    def __init__(
        self,
        limit: int = 16,
        *,
        rule: AdaptiveConcurrency | None = None,
        rate: Callable[[], float] | None = None,
        lag: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rule is not None and rate is None:
            raise ValueError("an adaptive gate needs the rate it serves (rate=...)")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        self._rule = rule
        self._rate = rate
        self._probe: LoopLag | None = None
        if rule is not None and lag is None:
            probe = self._probe = LoopLag(lambda: self.in_flight > 0 or bool(self._waiters))
            lag = lambda: probe.seconds  # noqa: E731
        self._lag = lag
        self._clock = clock
        self._limit = rule.min_limit if rule is not None else limit
        self.in_flight = 0
        self.peak = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._first_sent_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def set_limit(self, limit: int) -> None:
        """Pin the limit (a fixed gate) or override the rule's until its next decision."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        self._limit = limit
        self._wake()

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits (True); else change nothing."""
        if self._waiters:
            return False
        if self._rule is not None:
            self._decide(self._clock())  # the rate may have moved since the last answer
        if self.in_flight >= self._limit:
            return False
        self._take()
        return True

    async def acquire(self) -> None:
        """Wait for a slot, in arrival order. Cancelling while waiting gives nothing up."""
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._arm_timer()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # admitted just as we were cancelled: hand the slot on
            raise

    def release(self, latency_seconds: float | None = None, held: float | None = None) -> None:
        """`latency_seconds`: the answer's (None: no answer); `held`: how long the slot was
        held beyond any intended wait for the rate, when known (else the latency)."""
        self.in_flight -= 1
        rule = self._rule
        if rule is not None and latency_seconds is not None:
            now = self._clock()
            rate = self._rate() if self._rate is not None else math.inf
            lag = self._lag() if self._lag is not None else 0.0
            if rule.observe(latency_seconds, now, rate, lag, held) or self._waiters:
                self._decide(now)
        self._wake()

    def _take(self) -> None:
        if self._probe is not None:
            self._probe.wake()
        self.in_flight += 1
        if self.in_flight > self.peak:
            self.peak = self.in_flight
        if self._first_sent_at is None:
            self._first_sent_at = self._clock()

    def _decide(self, now: float) -> None:
        rule, rate = self._rule, self._rate
        assert rule is not None and rate is not None
        self._limit = rule.limit(rate(), now, self._first_sent_at)

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters and self.in_flight < self._limit:
            waiter = waiters.popleft()
            if waiter.done():  # cancelled while waiting
                continue
            self._take()
            waiter.set_result(None)
        while waiters and waiters[0].done():
            waiters.popleft()

    def _arm_timer(self) -> None:
        """Before the first answer the limit grows with time alone (the oldest request's
        age): wake up when it admits the next waiter, since no release may come before."""
        rule, rate = self._rule, self._rate
        if rule is None or rule.warmed_up or self._timer is not None or rate is None:
            return
        first = self._first_sent_at
        per_second = rate() * rule.headroom
        if first is None or per_second <= 0:
            return
        # ceil(rate x age x headroom) exceeds the requests out once age > out / per_second.
        due = first + self.in_flight / per_second
        delay = max(0.0, due - self._clock()) + 1e-6
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._rule is not None and not self._rule.warmed_up:
            self._decide(self._clock())
        self._wake()
        if self._waiters:
            self._arm_timer()


def gate_for(
    concurrency: int | None,
    *,
    max_concurrency: int = MAX_LIMIT,
    rate: Callable[[], float],
    lag: Callable[[], float] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> InFlightGate:
    """The gate for `[audit] concurrency`: pinned to an integer, or adaptive (None, for
    "auto") within 1..max_concurrency, following `rate` (the limiter's `pace`) and
    discounting the event loop's lateness (`lag`; measured by loop_lag.py when None)."""
    if concurrency is not None:
        return InFlightGate(concurrency, clock=clock)
    rule = AdaptiveConcurrency(max_limit=max_concurrency)
    return InFlightGate(rule=rule, rate=rate, lag=lag, clock=clock)
