"""Global adaptive rate limiter for API attempts (spec 7). Clock and sleep are injected.

Pacing is GCRA (virtual scheduling): each `acquire()` reserves the next slot
`max(now, tat - tolerance)` and moves the theoretical arrival time `tat` on by one interval,
`PACING_MARGIN / rate`, with no `await` in between, so concurrent callers are served in call
order and each sleeps once, until its own slot; nobody polls.

Burst: 1 by default, i.e. strict pacing with no idle credit. The emulator checks that no
1-second window ever holds more than the configured cap, and an idle credit of b requests plus
steady pacing puts b - 1 + cap requests in the first second, so any credit breaks that. A
`burst` above 1 may be configured; the window guard below still holds the cap.

Window guard: pacing alone can bunch requests when the event loop wakes sleepers late (a
busy loop at thousands of requests a second), so every release is also checked against the
last `floor(cap)` release times: the (n+1)-th release waits until the n-th most recent one is
1.005 s old. This makes "at most floor(cap) releases in any half-open 1-second window" hold
exactly on `clock`, whatever the lateness, and at the server as long as transit times differ
by at most 5 ms (`GUARD_SLACK_SECONDS`). Pacing runs 1.2 % under the rate (`PACING_MARGIN`),
the price of that slack. With a fractional cap the guard, not pacing, sets the pace:
floor(cap) releases per 1.005 s (for a cap below 1, one).

Adaptation: AIMD by default, its settings and its climb in limiter_tuning.py (a cut by a
factor, stray throttles ignored, a remembered ceiling to climb back to fast).

One-step convergence (optional, `settle_fraction`; `converging()`): beyond strays the rate
does not shrink by a guessed factor; it moves at once to sending `settle_fraction` (98 %) of
what the server let through (convergence.py: the rule, the delivery measure, when to probe
again), as TCP BBR sets its rate to the bottleneck's delivery rate. The client reports each
answer that was not a throttle (`on_success`, one addition) and each throttle's send time:
a throttle of a request sent before the last step says nothing of the rate since, and is
not counted; throttles inside `decrease_interval_seconds` count towards the next step. The
stray rule still decides whether to step at all, and the window guard still bounds every
second. `server_bounded` holds from a step until the rate is back at the cap;
`settled_rate` is the last precise step's rate (or a warm start's, `initial_rate`): what a
later run starts from (store/learned_rate.py).

Rate-limit headers (`on_rate_limit`): when the server says how much of its quota is left
(ratelimit_headers.py), the rate is held to the remaining budget over the time to its reset,
until that reset, never above the cap; a budget of 0 holds every request until the reset.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

from audit_job.convergence import WINDOW_SECONDS, Convergence
from audit_job.limiter_tuning import (
    CONVERGING_TUNING,
    RUN_TUNING,
    aimd_climb,
    check_rate,
    check_settings,
    window_quota,
)

# The guard counts releases over a slightly longer window, so that up to this much jitter
# between our clock and the server's arrival times cannot slip an extra request into one of
# the server's 1-second windows. 2 ms was too little on a loaded 2-core host: scheduling
# delays put 0.5-0.7 % of requests over a limit equal to the rate (benchmarks/run.py).
GUARD_SLACK_SECONDS = 0.005
# Pacing runs 1.2 % slower than the rate, so n paced releases span 1.012 s, more than the
# guard's 1.005 s: the guard stays idle in steady state and acts only on real bunching, instead
# of adding a short sleep to every release that woke earlier than its predecessor n back (with
# 2 ms between the two, late wake-ups on a loaded host made it cost up to 7 % of the rate).
PACING_MARGIN = 1.012
# Guard sleeps overshoot by this much so float rounding can never leave a release a hair
# inside the window (and a fake clock can never spin on sub-ulp sleeps).
_GUARD_EPSILON_SECONDS = 1e-6
_GUARD_WINDOW = WINDOW_SECONDS + GUARD_SLACK_SECONDS
# `tat` is a running sum of intervals; a slot this close to now is rounding noise, not a wait.
_SLOT_EPSILON_SECONDS = 1e-9


class AdaptiveRateLimiter:
    def __init__(
        self,
        rate_per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        burst: int = 1,
        min_rate: float = 1.0,
        decrease_factor: float = 0.7,
        decrease_interval_seconds: float = 1.0,
        recovery_delay_seconds: float = 1.0,
        recovery_fraction: float = 0.05,
        fast_recovery_fraction: float | None = None,
        fast_recovery_until: float = 0.97,
        min_throttles: int = 1,
        throttle_share: float = 0.0,
        settle_fraction: float | None = None,
        probe_fraction: float = 0.01,
        probe_after_seconds: float = 0.0,
        initial_rate: float | None = None,
    ) -> None:
        check_settings(
            rate_per_second=rate_per_second,
            min_rate=min_rate,
            burst=burst,
            decrease_factor=decrease_factor,
            decrease_interval_seconds=decrease_interval_seconds,
            recovery_delay_seconds=recovery_delay_seconds,
            recovery_fraction=recovery_fraction,
            fast_recovery_fraction=fast_recovery_fraction,
            fast_recovery_until=fast_recovery_until,
            min_throttles=min_throttles,
            throttle_share=throttle_share,
            settle_fraction=settle_fraction,
            probe_fraction=probe_fraction,
            probe_after_seconds=probe_after_seconds,
            initial_rate=initial_rate,
        )
        self._clock = clock
        self._sleep = sleep
        self._burst = burst
        self._min_rate_setting = min_rate
        self._decrease_factor = decrease_factor
        self._decrease_interval = decrease_interval_seconds
        self._recovery_delay = recovery_delay_seconds
        self._recovery_fraction = recovery_fraction
        self._fast_fraction = fast_recovery_fraction
        self._fast_until = fast_recovery_until
        self._ceiling = math.inf  # the rate at the last throttle
        self._min_throttles = min_throttles
        self._throttle_share = throttle_share
        self._recent_throttles: deque[float] = deque()
        self._cap = rate_per_second
        self._rate = rate_per_second
        self._tat = -math.inf
        self._last_decrease_at = -math.inf
        self._rate_updated_at = -math.inf
        self._hold_until = -math.inf  # no climb before this (recovery delay after a cut)
        self._released: deque[float] = deque(maxlen=window_quota(rate_per_second))
        self._convergence: Convergence | None = None
        if settle_fraction is not None:
            self._convergence = Convergence(
                settle_fraction,
                probe_fraction=probe_fraction,
                probe_after_seconds=probe_after_seconds,
                pacing_margin=PACING_MARGIN,
            )
        self._hint_rate = math.inf  # from rate-limit headers, until _hint_until
        self._hint_until = -math.inf
        if initial_rate is not None and initial_rate < rate_per_second:
            now = clock()
            self._rate = initial_rate
            self._rate_updated_at = now
            self._hold_until = now + max(recovery_delay_seconds, probe_after_seconds)
            assert self._convergence is not None
            self._convergence.settle_at(initial_rate, precise=True)

    @classmethod
    def for_run(cls, rate_per_second: float) -> AdaptiveRateLimiter:
        """The AIMD tuning (limiter_tuning.RUN_TUNING)."""
        return cls(rate_per_second, **RUN_TUNING)

    @classmethod
    def converging(
        cls,
        rate_per_second: float,
        *,
        initial_rate: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> AdaptiveRateLimiter:
        """One-step convergence (limiter_tuning.CONVERGING_TUNING), for a client that
        reports every answer let through (`on_success`) and each throttle's send time
        (`on_throttle(sent_at)`). `initial_rate`: the rate learned by an earlier run."""
        return cls(
            rate_per_second,
            initial_rate=initial_rate,
            clock=clock,
            sleep=sleep,
            **CONVERGING_TUNING,
        )

    @property
    def cap(self) -> float:
        """The configured ceiling, requests per second."""
        return self._cap

    @property
    def current_rate(self) -> float:
        """The rate now in force (<= cap), requests per second; for metrics."""
        return self._in_force(self._clock())

    @property
    def pace(self) -> float:
        """Requests per second actually let out at most: the rate under the pacing margin
        (what Little's law multiplies by the latency, audit_job/concurrency.py)."""
        return self._in_force(self._clock()) / PACING_MARGIN

    @property
    def server_bounded(self) -> bool:
        """Whether the server's throttling holds the rate below the cap (convergence mode)."""
        self._recover(self._clock())
        return self._convergence is not None and self._convergence.bounded

    @property
    def settled_rate(self) -> float | None:
        """The rate the last precisely measured step (or a warm start) set; None before
        any: what a later run may start from."""
        return self._convergence.settled if self._convergence is not None else None

    def delivered_rate(self) -> float | None:
        """Answers the server let through per second over the last second (None with too
        few, or before a whole second went by); for the run's summary and metrics."""
        if self._convergence is None:
            return None
        delivered = self._convergence.meter.rate(self._clock(), since_throttling=False)
        return None if delivered is None else delivered[0]

    def try_acquire(self) -> bool:
        """Take a slot if one is free right now (True); otherwise change nothing (False).
        The hot path's way in: no coroutine is made when there is nothing to wait for."""
        now = self._clock()
        if self._convergence is not None:
            self._convergence.meter.mark(now)
        interval = PACING_MARGIN / self._in_force(now)
        tat = self._tat
        if tat - (self._burst - 1) * interval - now > _SLOT_EPSILON_SECONDS:
            return False
        released = self._released
        if len(released) >= (released.maxlen or 1) and now - released[0] < _GUARD_WINDOW:
            return False
        self._tat = max(tat, now) + interval
        released.append(now)
        return True

    async def acquire(self) -> float:
        """Wait for this caller's slot; returns when the slot was due (what waiting past it
        cost is the client's own lateness). Cancelling while waiting forfeits the slot."""
        if self.try_acquire():
            return self._clock()
        now = self._clock()
        interval = PACING_MARGIN / self._in_force(now)
        tat = self._tat
        slot = max(now, tat - (self._burst - 1) * interval)
        self._tat = max(tat, now) + interval
        if slot - now > _SLOT_EPSILON_SECONDS:
            await self._sleep(slot - now)
        while True:
            # Read afresh after every sleep: `set_cap` may have replaced the deque meanwhile.
            released = self._released
            now = self._clock()
            if len(released) < (released.maxlen or 1) or now - released[0] >= _GUARD_WINDOW:
                released.append(now)
                return slot
            await self._sleep(released[0] + _GUARD_WINDOW - now + _GUARD_EPSILON_SECONDS)

    def on_throttle(self, sent_at: float | None = None) -> bool:
        """Report a throttle answer; True when it lowered the rate (once per interval).

        `sent_at`: when the request went out, on this limiter's clock. In convergence mode
        a throttle of a request sent before the last step says nothing about the rate in
        force since, so it only counts as throttling (for the delivery measure), and a
        later step measures what came through from this step on (the server was full on
        both sides of it, so no answer of a fuller or emptier time is mixed in)."""
        now = self._clock()
        rate = self._recover(now)
        convergence = self._convergence
        if convergence is not None:
            convergence.meter.throttled(now, sent_at)
            if sent_at is not None and sent_at < self._last_decrease_at:
                return False
        recent = self._recent_throttles
        if now - self._last_decrease_at < self._decrease_interval:
            # Classic mode: a volley after a cut counts once. Convergence mode counts it
            # towards the next step (a step already taken is not repeated).
            if convergence is not None:
                recent.append(now)
            return False
        recent.append(now)
        while now - recent[0] > WINDOW_SECONDS:
            recent.popleft()
        needed = max(self._min_throttles, math.ceil(self._throttle_share * rate))
        if len(recent) < needed:
            return False  # stray throttles (jitter at the limit) are not a lower limit
        new_rate, hold, precise = rate * self._decrease_factor, 0.0, False
        measured = False
        if convergence is not None:
            step = convergence.step(now, rate)
            if step is None:
                return False  # already there: these answers were sent before the last step
            if step[0] > 0:
                new_rate, hold, precise = step
                measured = True
        recent.clear()
        self._ceiling = rate
        self._rate = max(self._min_rate, new_rate)
        self._last_decrease_at = now
        self._rate_updated_at = now
        self._hold_until = now + max(self._recovery_delay, hold)
        if convergence is not None:
            convergence.settle_at(self._rate, precise)
            if sent_at is not None and measured:
                # The server is full on both sides of now: measure from the step on. A cut
                # by a factor (too soon to measure) keeps measuring since throttling began.
                convergence.meter.restart(now)
        return True

    def on_success(self, sent_at: float | None = None, now: float | None = None) -> None:
        """Report an answer the server let through (anything but a throttle): the delivery
        count the convergence step measures. O(1). `sent_at`: when its request went out,
        on this limiter's clock (a throttling episode counts only the requests sent during
        it); `now`: that clock's reading at the answer, when the caller has one."""
        if self._convergence is not None:
            self._convergence.meter.let_through(sent_at, self._clock() if now is None else now)

    def on_rate_limit(self, remaining: float, reset_seconds: float) -> None:
        """The server's own word (RateLimit / X-RateLimit headers): `remaining` requests
        until its quota resets in `reset_seconds`. Until then the rate is at most
        remaining / reset (never above the cap); with nothing remaining, no slot is given
        before the reset."""
        if not (math.isfinite(remaining) and math.isfinite(reset_seconds)) or reset_seconds <= 0:
            return
        now = self._clock()
        self._hint_until = now + reset_seconds
        if remaining < 1:
            self._hint_rate = math.inf
            self._tat = max(self._tat, self._hint_until)
            return
        self._hint_rate = max(self._min_rate, remaining / reset_seconds)

    def set_cap(self, rate_per_second: float, *, scale_rate: bool = False) -> None:
        """Change the configured ceiling at runtime (e.g. a budget shared by processes).

        Lowering it takes effect at once; raising it lets the rate climb by recovery.
        `scale_rate`: the rate in force (and the settled one) moves by the same factor, as a
        worker's share of what the server lets through changes with its share of the cap.
        """
        check_rate("rate_per_second", rate_per_second)
        now = self._clock()
        self._recover(now)
        if scale_rate and rate_per_second != self._cap:
            factor = rate_per_second / self._cap
            self._rate *= factor
            convergence = self._convergence
            if convergence is not None:
                convergence.scale(factor)
        self._cap = rate_per_second
        if self._rate >= rate_per_second:
            self._rate = rate_per_second
            if self._convergence is not None:
                self._convergence.bounded = False  # the cap holds the rate now, not the server
        self._rate_updated_at = now
        self._released = deque(self._released, maxlen=window_quota(rate_per_second))

    @property
    def _min_rate(self) -> float:
        return min(self._min_rate_setting, self._cap)

    def _in_force(self, now: float) -> float:
        rate = self._recover(now)
        if now < self._hint_until and self._hint_rate < rate:
            return self._hint_rate
        return rate

    def _recover(self, now: float) -> float:
        """Apply the climb due since the last update; return the current rate."""
        rate = self._rate
        if rate < self._cap:
            start = max(self._rate_updated_at, self._hold_until)
            if now > start:
                elapsed = now - start
                convergence = self._convergence
                if convergence is not None:
                    rate = min(self._cap, rate + convergence.probe_per_second * elapsed)
                    if rate >= self._cap:
                        convergence.bounded = False
                    self._rate = rate
                    self._rate_updated_at = now
                    return rate
                rate = aimd_climb(
                    rate,
                    self._cap,
                    elapsed,
                    ceiling=self._ceiling,
                    fast_fraction=self._fast_fraction,
                    fast_until=self._fast_until,
                    slow_fraction=self._recovery_fraction,
                )
                self._rate = rate
                self._rate_updated_at = now
        return rate
