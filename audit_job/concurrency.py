"""Adaptive in-flight limit: as many requests in flight as the rate needs at the latency
measured, and fewer when latency rises with load. Clock injected; no task runs for it.

Two rules, the lower wins, always within [min_limit, max_limit] (`[audit] max_concurrency`):

Little's law. Reaching `rate` requests a second at latency L takes rate x L requests in
flight, so the limit is `ceil(rate x L_high x headroom)`: L_high is the 90th percentile of
the last 256 answers' hold times (their spread, not their mean): from when the request's
rate slot was due to its answer, the latency plus what the client itself spent around it (a
late loop wakes the request late for its slot and takes up the answer late: on a loaded
2-core host a 5 ms API held each slot ~25 ms, and a limit from the latency alone ran at 70 %
of the rate, benchmarks/run.py). Headroom 1.1 keeps about one request waiting at the rate
limiter so no paced slot goes unused. `rate` is what the rate limiter lets out now
(`AdaptiveRateLimiter.pace`), read at every admission, so the limit follows its steps and
probes. Before the first answer the latency is unknown, but never shorter than the age of
the oldest request out: the limit grows with that age (`rate x age x headroom`), so a 500 ms
API does not spend its first second at a guess.

Gradient (the server queueing). Answers are grouped into intervals (>= 100 ms and >= 16
answers); for each, its median latency m and the requests in flight it saw, X = answers a
second x mean latency (Little again, from answers alone). The baseline B is the lowest
median of any 16 consecutive answers. It is measured before a queue can build: the cap
starts at `initial_cap` (64) and grows by one per answer (TCP's slow start: it doubles each
round trip while it binds) until the first cut. Starting at the maximum, a run against a
server serving 50 at once sent 256 requests before any answer, its first answers already
took 5x the server's latency (the client's own start-up in them too), and that baseline
never saw the queue: 6x the latency all run (benchmarks/run.py). When m > tolerance x B
(1.5), latency grew with load: the server queues what it cannot serve, and more in flight
only adds waiting. If latency is proportional to load beyond the server's capacity, X x 1.2
x B / m in flight brings the median down to 1.2 x B (`CUT_TO`), so the cap moves there in
one step: clearly under the tolerance, so the verdict below tells a cut that drained a queue
from one that did not (a cut to exactly the tolerance changed the median by no more than an
interval's noise, and was undone as "not ours"). While m <= tolerance x B the cap grows by
10 % an interval, probing for room. A median less than `queue_floor` (15 ms) above B is
never a queue: a busy client host's own scheduling delays add 5-15 ms to every answer
without any server queueing, and cutting for them starved a 300/s run down to one request in
flight, and a 500/s run at 5 ms to 55 % of its rate (benchmarks/run.py). A cut is judged by
the first interval that starts a median latency after it (earlier answers were sent before
it): if requests in flight fell by 15 % or more and the median stayed (>= 85 % of before: a
cut of our own queue brings it down to 1.2 x B, and an interval's median of a +-10 % spread
varies), the slowdown is not ours (the API got slower for everyone), so the baseline moves
to the new median and the cut is undone. Each cut is an experiment; no periodic probing is
needed, and a standing queue never creeps the baseline up, since it moves down only, or on
such a verdict.

A cut is also undone when the answers a second fell by more than 10 % (`_KEPT`): a server at
its capacity answers as many with fewer in flight, while a client busy with its own CPU (its
latency grows with what it has in flight, like a server queue) answers fewer; without this a
run against a fast API settled at 9 in flight and 1,236/s where a pinned 64 did as well.

A cut needs two more things, since cutting only helps against a queue at the server:
- The rate falls short: the interval's answers a second are under `SHORTFALL` (90 %) of the
  rate the limiter lets out (`rate`, passed with each answer). While the pacer, not the
  server, sets the pace, fewer in flight cannot lower anyone's latency; it only starves the
  run.
- The server is slower, not the client: the median less the client's own event-loop lateness
  (`lag`, how late the event loop runs its timers, loop_lag.py; at most half the rise over
  the baseline, so a client slowed by a queue of answers still sees it) is what is compared
  with the baseline. A CPU-starved client sees its own scheduling delay in every latency (a
  5 ms API measured at 17 ms on a loaded 2-core host); reading it as server queueing cut the
  limit, which lowered the rate, a spiral down (benchmarks/run.py).

Cheap on the hot path: an answer appends to three small buffers; sorting happens once per
16 answers (16 values) and once per interval (256 values).
"""

from __future__ import annotations

import math
from collections import deque

MAX_LIMIT = 256
INITIAL_CAP = 64
HEADROOM = 1.1
HIGH_PERCENTILE = 0.9
TOLERANCE = 1.5
CUT_TO = 1.2
QUEUE_FLOOR_SECONDS = 0.015
GROWTH = 0.1
SHORTFALL = 0.9
WINDOW_SAMPLES = 256
INTERVAL_SECONDS = 0.1
INTERVAL_SAMPLES = 16
# A cut judged "not ours": in flight fell at least this much, the median at most this much.
_FELL = 0.85
_STAYED = 0.85
# A cut that left fewer than this share of the answers a second did not help: undone.
_KEPT = 0.9
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
        initial_cap: int = INITIAL_CAP,
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
        if initial_cap < 1:
            raise ValueError(f"initial_cap must be >= 1, got {initial_cap!r}")
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
        # Slow start (TCP's): the cap starts low and grows by one per answer until the first
        # cut, so the first answers show the latency of an unloaded server (the baseline).
        self._cap = float(max(min_limit, min(max_limit, initial_cap)))
        self._slow_start = True
        # The last cut: (at, in flight, median, the cap before it)
        self._cut: tuple[float, float, float, float, float] | None = None
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
        self,
        latency_seconds: float,
        now: float,
        rate: float = math.inf,
        lag: float = 0.0,
        held: float | None = None,
    ) -> bool:
        """One answer's latency; True when it closed an interval (the limit may have moved).
        `rate`: what the rate limiter lets out now; `lag`: the client's own lateness;
        `held`: how long its slot was held beyond the intended wait for the rate, when
        known (Little's law counts that; the gradient judges the latency)."""
        if not (latency_seconds >= 0 and math.isfinite(latency_seconds)):
            return False
        self._rate_seen = rate
        self._lag_seen = lag
        if held is None:
            # Unknown: a late loop also wakes each request late from its paced sleep.
            held = latency_seconds + max(0.0, lag)
        elif not (held >= latency_seconds and math.isfinite(held)):
            held = latency_seconds
        self._window.append(held)
        if self._slow_start and self._cap < self.max_limit:
            # One more per answer: doubles each round trip while the cap is what binds.
            self._cap = min(float(self.max_limit), self._cap + 1.0)
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
            cut_at, in_flight_before, median_before, cap_before, answers_before = cut
            if started < cut_at + median_before:
                return  # these answers were sent before the cut: they cannot judge it
            self._cut = None
            fell = in_flight <= _FELL * in_flight_before
            if (fell and median >= _STAYED * median_before) or answers < _KEPT * answers_before:
                # Less load, same latency: the API slowed, not from us. Or fewer answers a
                # second: the queue was not one a cut drains (a server at its capacity
                # answers as many with fewer in flight; a client busy with its own CPU does
                # not). Undo the cut; the baseline was too low for this load.
                self._base = median
                self._cap = max(self._cap, cap_before)
                return
        # The client's lateness is taken off, but never more than half the rise: a client
        # slowed by its own queue of answers must still see the server's.
        server_median = median - min(max(0.0, self._lag_seen), max(0.0, median - base) / 2)
        ratio = server_median / base
        short = answers < SHORTFALL * self._rate_seen
        if short and ratio > self._tolerance and server_median - base > self._queue_floor:
            target = in_flight * min(CUT_TO, self._tolerance) / ratio
            before, answers_before = self._cap, answers
            if cut is not None:  # a cut on a cut: undoing it undoes both
                before, answers_before = max(before, cut[3]), max(answers, cut[4])
            self._cap = max(float(self.min_limit), min(self._cap, target))
            self._slow_start = False
            self._cut = (now, in_flight, median, before, answers_before)
        elif self._cap < self.max_limit:
            self._cap = min(float(self.max_limit), self._cap * (1 + self._growth))
