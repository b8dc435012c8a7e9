"""Adaptive in-flight limit: as many requests in flight as the rate needs at the latency
measured, and fewer when latency rises with load. Clock injected; no task runs for it.

Two rules, the lower wins, always within [min_limit, max_limit] (`[audit] max_concurrency`):

Little's law. Reaching `rate` requests a second at latency L takes rate x L requests in
flight, so the limit is `ceil(rate x L_high x headroom)`: L_high is the 90th percentile of
the last 256 answers' latencies (their spread, not their mean) plus the client's own
lateness (below: a late loop wakes each request late for its rate slot), headroom 1.1
keeps about one request waiting at the rate limiter so no paced slot goes unused. `rate` is
what the rate limiter lets out now (`AdaptiveRateLimiter.pace`), read at every admission,
so the limit follows its steps and probes. Before the first answer the latency is unknown, but never
shorter than the age of the oldest request out: the limit grows with that age
(`rate x age x headroom`), so a 500 ms API does not spend its first second at a guess.

Gradient (the server queueing). Answers are grouped into intervals (>= 100 ms and >= 16
answers); for each, its median latency m and the requests in flight it saw, X = answers a
second x mean latency (Little again, from answers alone). The baseline B is the lowest
median of any 16 consecutive answers: it is measured before a queue can build, even in a
run's first 100 ms. When m > tolerance x B (1.5), latency grew with load: the server queues
what it cannot serve, and more in flight only adds waiting. If latency is proportional to
load beyond the server's capacity, X x tolerance x B / m in flight brings the median back to
tolerance x B, so the cap moves there in one step. While m <= tolerance x B the cap grows by
10 % an interval, probing for room. A median less than `queue_floor` (5 ms) above B is never
a queue: at latencies of a few milliseconds a busy client host's own scheduling delays
double the median without any server queueing, and cutting for them starved a 300/s run down
to one request in flight (benchmarks/run.py). A cut is judged by the first interval that
starts a median latency after it (earlier answers were sent before it): if requests in
flight fell by 15 % or more and the median stayed (>= 85 % of before: a cut of our own
queue brings it down to the tolerance, and an interval's median of a +-10 % spread varies),
the slowdown is not ours (the API got slower for everyone), so the baseline moves to the
new median and the cut is undone. Each cut is an experiment; no periodic probing is
needed, and a standing queue never creeps the baseline up, since it moves down only, or on
such a verdict.

A cut needs two more things, since cutting only helps against a queue at the server:
- The rate falls short: the interval's answers a second are under `SHORTFALL` (90 %) of the
  rate the limiter lets out (`rate`, passed with each answer). While the pacer, not the
  server, sets the pace, fewer in flight cannot lower anyone's latency; it only starves the
  run.
- The server is slower, not the client: the median less the client's own event-loop lateness
  (`lag`, how late the event loop runs its timers, loop_lag.py) is what is compared
  with the baseline. A CPU-starved client sees its own scheduling delay in every latency (a
  5 ms API measured at 17 ms on a loaded 2-core host); reading it as server queueing cut the
  limit, which lowered the rate, a spiral down (benchmarks/run.py).

Cheap on the hot path: an answer appends to three small buffers; sorting happens once per
16 answers (16 values) and once per interval (256 values).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

from audit_job.loop_lag import LoopLag

MAX_LIMIT = 256
HEADROOM = 1.1
HIGH_PERCENTILE = 0.9
TOLERANCE = 1.5
QUEUE_FLOOR_SECONDS = 0.005
GROWTH = 0.1
SHORTFALL = 0.9
WINDOW_SAMPLES = 256
INTERVAL_SECONDS = 0.1
INTERVAL_SAMPLES = 16
# A cut judged "not ours": in flight fell at least this much, the median at most this much.
_FELL = 0.85
_STAYED = 0.85
# ceil() of a product that is an integer up to float rounding (500 x 0.006 = 3.0000000000000004).
_ROUNDING = 1e-9


class AdaptiveConcurrency:
    """The rule: feed it every answer's latency (`observe`), ask it for the limit."""

    def __init__(
        self,
        *,
        max_limit: int = MAX_LIMIT,
        min_limit: int = 1,
        headroom: float = HEADROOM,
        percentile: float = HIGH_PERCENTILE,
        tolerance: float = TOLERANCE,
        growth: float = GROWTH,
        queue_floor: float = QUEUE_FLOOR_SECONDS,
        gradient: bool = True,
    ) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError(f"need 1 <= min_limit <= max_limit, got {min_limit}, {max_limit}")
        if not (headroom >= 1 and math.isfinite(headroom)):
            raise ValueError(f"headroom must be >= 1, got {headroom!r}")
        if not 0 < percentile <= 1:
            raise ValueError(f"percentile must be in (0, 1], got {percentile!r}")
        if not (tolerance > 1 and math.isfinite(tolerance)):
            raise ValueError(f"tolerance must be > 1, got {tolerance!r}")
        if not (growth > 0 and math.isfinite(growth)):
            raise ValueError(f"growth must be > 0, got {growth!r}")
        if not (queue_floor >= 0 and math.isfinite(queue_floor)):
            raise ValueError(f"queue_floor must be >= 0, got {queue_floor!r}")
        self._queue_floor = queue_floor
        self.max_limit = max_limit
        self.min_limit = min_limit
        self._headroom = headroom
        self._percentile = percentile
        self._tolerance = tolerance
        self._growth = growth
        self._gradient = gradient
        self._window: deque[float] = deque(maxlen=WINDOW_SAMPLES)
        self._interval: list[float] = []
        self._interval_started_at: float | None = None
        self._group: list[float] = []  # the last few answers, for the baseline
        self._high: float | None = None  # the window's high percentile, per interval
        self._base: float | None = None
        self._cap = float(max_limit)
        # The last cut: (at, in flight, median, the cap before it)
        self._cut: tuple[float, float, float, float] | None = None
        self._rate_seen = math.inf  # the rate let out, and the client's lag, at the last answer
        self._lag_seen = 0.0

    @property
    def baseline_seconds(self) -> float | None:
        """The lowest interval median seen (or the latency a verdict moved it to)."""
        return self._base

    @property
    def headroom(self) -> float:
        return self._headroom

    @property
    def cap(self) -> float:
        """The gradient's bound on requests in flight."""
        return self._cap

    @property
    def warmed_up(self) -> bool:
        """Whether any answer has been seen (until then the oldest request's age counts)."""
        return bool(self._window)

    def observe(
        self, latency_seconds: float, now: float, rate: float = math.inf, lag: float = 0.0
    ) -> bool:
        """One answer's latency; True when it closed an interval (the limit may have moved).
        `rate`: what the rate limiter lets out now; `lag`: the client's own lateness."""
        if not (latency_seconds >= 0 and math.isfinite(latency_seconds)):
            return False
        self._rate_seen = rate
        self._lag_seen = lag
        self._window.append(latency_seconds)
        group = self._group
        group.append(latency_seconds)
        if len(group) >= INTERVAL_SAMPLES:
            group.sort()
            median = group[len(group) // 2]
            if self._base is None or median < self._base:
                self._base = median
            group.clear()
        interval = self._interval
        interval.append(latency_seconds)
        started = self._interval_started_at
        if started is None:
            # The first interval starts at the first answer: before it nothing was measured.
            self._interval_started_at = now
            return False
        if len(interval) < INTERVAL_SAMPLES or now - started < INTERVAL_SECONDS:
            return False
        self._close_interval(now, started)
        return True

    def limit(self, rate: float, now: float, oldest_sent_at: float | None) -> int:
        """The limit for `rate` requests a second, now."""
        high = self._high
        if high is None:
            if self._window:
                high = max(self._window)  # a few answers, no interval yet: the slowest
            elif oldest_sent_at is not None:
                high = max(0.0, now - oldest_sent_at)  # no answer yet: at least this long
            else:
                high = 0.0
        # A late loop also wakes each request late from its paced sleep: a slot is held
        # that much longer than the latency shows.
        high += self._lag_seen
        need = math.ceil(rate * high * self._headroom - _ROUNDING) if rate > 0 else 0
        if self._gradient:
            need = min(need, math.floor(self._cap))
        return max(self.min_limit, min(self.max_limit, need))

    def _close_interval(self, now: float, started: float) -> None:
        samples = sorted(self._interval)
        self._interval = []
        self._interval_started_at = now
        count = len(samples)
        median = samples[count // 2]
        in_flight = sum(samples) / (now - started)  # answers/s x mean latency
        window = sorted(self._window)
        self._high = window[min(len(window) - 1, int(self._percentile * len(window)))]
        if self._base is None:
            self._base = median
        if self._gradient:
            answers_per_second = count / (now - started)
            self._judge(now, started, median, in_flight, answers_per_second)

    def _judge(
        self, now: float, started: float, median: float, in_flight: float, answers: float
    ) -> None:
        base = self._base
        assert base is not None
        cut = self._cut
        if cut is not None:
            cut_at, in_flight_before, median_before, cap_before = cut
            if started < cut_at + median_before:
                return  # these answers were sent before the cut: they cannot judge it
            self._cut = None
            if in_flight <= _FELL * in_flight_before and median >= _STAYED * median_before:
                # Less load, same latency: the API slowed, not from us. Undo the cut.
                self._base = median
                self._cap = max(self._cap, cap_before)
                return
        server_median = median - max(0.0, self._lag_seen)
        ratio = server_median / base
        short = answers < SHORTFALL * self._rate_seen
        if short and ratio > self._tolerance and server_median - base > self._queue_floor:
            target = in_flight * self._tolerance / ratio
            before = self._cap
            self._cap = max(float(self.min_limit), min(self._cap, target))
            self._cut = (now, in_flight, median, before)
        elif self._cap < self.max_limit:
            self._cap = min(float(self.max_limit), self._cap * (1 + self._growth))


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

    def release(self, latency_seconds: float | None = None) -> None:
        self.in_flight -= 1
        rule = self._rule
        if rule is not None and latency_seconds is not None:
            now = self._clock()
            rate = self._rate() if self._rate is not None else math.inf
            lag = self._lag() if self._lag is not None else 0.0
            if rule.observe(latency_seconds, now, rate, lag) or self._waiters:
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
