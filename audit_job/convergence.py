"""One-step convergence for the rate limiter: what a server lets through (TCP BBR's delivery
rate), the step to it, and the probe after it. Clock passed in; O(1) per answer.

Delivery. Every answer that was not a throttle adds one to `DeliveryMeter.accepted` (the
hot path: one addition). A checkpoint (time, accepted) is taken at most every 100 ms as
requests go out, over a little more than the last second. A throttling episode begins at
the first throttle after a second without any, and again at every step. The rate let
through, asked at a throttle:
- since the episode began, when at least 6 answers came through since (and 20 ms went by):
  a token bucket lets its stored burst through before it throttles, which says nothing of
  its rate, and exactly its rate while it throttles;
- else over the last second, once the meter has seen a whole second, or when nothing at all
  came through since the episode began: a server counting whole seconds lets its quota
  through early in the second, then nothing;
- else unknown.

The step (`Convergence.step`), for throttles beyond strays at `rate`: the sending rate
becomes `settle_fraction` (98 %) of what came through, never more than `rate` (a throttle
never raises it); unknown, a factor of the rate instead. A step measured on 50 answers or
more is precise (a quota counter is exact to one answer): its rate is remembered
(`settled`, what a later run may start from), and when the server clearly bounds the rate
(it did before, or the step goes below 90 % of the rate; a smaller first step may be a
cluster of "system busy") the rate holds there `probe_after_seconds` (30 s) before it
probes, since each probe above a known limit costs a few 429s however slowly it climbs.
After a rough step the probe runs five times faster: off by up to one in a few, it is to be
measured again soon. A step goes at most to `MAX_STEP_DOWN` (a quarter) of the rate, and such a
clamped step is rough: what came through is what the client sent, when the client itself
could not send (a busy host's stalled event loop between the throttles and the step); on a
loaded bench host one such measure put a 300/s limit at 52/s, held 30 s (benchmarks/run.py).
"""

from __future__ import annotations

import math
from collections import deque

WINDOW_SECONDS = 1.0
MARK_SECONDS = 0.1
MIN_DELIVERED = 6
MIN_DELIVERY_SECONDS = 0.02
_MARKS = int(WINDOW_SECONDS / MARK_SECONDS) + 2
PRECISE_DELIVERED = 50
CLEAR_STEP = 0.9
ROUGH_PROBE_SPEEDUP = 5.0
MAX_STEP_DOWN = 0.25


class DeliveryMeter:
    __slots__ = ("_episode", "_last_throttle_at", "_mark_due", "_marks", "accepted")

    def __init__(self) -> None:
        self.accepted = 0
        self._marks: deque[tuple[float, int]] = deque(maxlen=_MARKS)
        self._mark_due = -math.inf
        self._last_throttle_at = -math.inf
        self._episode = (-math.inf, 0)  # (when throttling began, accepted by then)

    def mark(self, now: float) -> None:
        """Take a checkpoint if one is due (called as requests go out)."""
        if now >= self._mark_due:
            self._marks.append((now, self.accepted))
            self._mark_due = now + MARK_SECONDS

    def throttled(self, now: float) -> None:
        if now - self._last_throttle_at > WINDOW_SECONDS:
            self._episode = (now, self.accepted)
        self._last_throttle_at = now

    def restart(self, now: float) -> None:
        """Measure from now on (a step was taken while the server stays full)."""
        self._episode = (now, self.accepted)

    def rate(self, now: float, *, since_throttling: bool) -> tuple[float, int] | None:
        """(answers let through per second, how many were counted), or None."""
        self.mark(now)
        window_start = now - WINDOW_SECONDS
        before, whole = 0, False  # accepted by the window's start; a whole window seen
        for at, count in self._marks:
            if at > window_start:
                break
            before, whole = count, True
        if since_throttling:
            began_at, accepted_then = self._episode
            through = self.accepted - accepted_then
            if through >= MIN_DELIVERED and now - began_at >= MIN_DELIVERY_SECONDS:
                return through / (now - began_at), through
            whole = whole or through == 0
        counted = self.accepted - before
        if counted < MIN_DELIVERED or not whole:
            return None
        return counted / WINDOW_SECONDS, counted


class Convergence:
    """The step rule, and what it remembers between steps."""

    __slots__ = (
        "_margin",
        "_probe_after",
        "_probe_fraction",
        "_settle",
        "bounded",
        "meter",
        "probe_per_second",
        "settled",
    )

    def __init__(
        self,
        settle_fraction: float,
        *,
        probe_fraction: float,
        probe_after_seconds: float,
        pacing_margin: float,
    ) -> None:
        self._settle = settle_fraction
        self._probe_fraction = probe_fraction
        self._probe_after = probe_after_seconds
        self._margin = pacing_margin
        self.meter = DeliveryMeter()
        self.bounded = False  # the server's throttling holds the rate below the cap
        self.settled: float | None = None  # the last precise step's rate
        self.probe_per_second = 0.0  # how fast the rate climbs after the last step

    def step(self, now: float, rate: float) -> tuple[float, float, bool] | None:
        """(new rate, seconds to hold before probing, precise) for throttles beyond strays
        at `rate`; None when what came through is not below it. New rate 0.0: unknown."""
        delivered = self.meter.rate(now, since_throttling=True)
        if delivered is None:
            return 0.0, 0.0, False
        per_second, counted = delivered
        new_rate = self._settle * per_second * self._margin
        if new_rate >= rate:
            return None
        precise = counted >= PRECISE_DELIVERED
        if new_rate < MAX_STEP_DOWN * rate:
            new_rate, precise = MAX_STEP_DOWN * rate, False
        clear = self.bounded or new_rate < CLEAR_STEP * rate
        return new_rate, self._probe_after if precise and clear else 0.0, precise

    def settle_at(self, rate: float, precise: bool) -> None:
        """The rate is now `rate`, after a step (or a warm start)."""
        self.bounded = True
        if precise:
            self.settled = rate
        speed = 1.0 if precise else ROUGH_PROBE_SPEEDUP
        self.probe_per_second = speed * self._probe_fraction * rate

    def scale(self, factor: float) -> None:
        """This client's share of the server's rate changed by `factor` (workers joined or
        left a shared run)."""
        if self.settled is not None:
            self.settled *= factor
        self.probe_per_second *= factor
