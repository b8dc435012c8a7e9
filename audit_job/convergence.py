"""One-step convergence for the rate limiter: what a server lets through (TCP BBR's delivery
rate), the step to it, and the probe after it. Clock passed in; O(1) per answer.

Delivery. Every answer that was not a throttle adds one to `DeliveryMeter.accepted` (the
hot path: a few additions). A checkpoint (time, accepted) is taken at most every 100 ms as
requests go out, over a little more than the last second. A throttling episode begins at
the first throttle after a second without any, and again at every measured step. The rate
let through, asked at a throttle:
- since the episode began, when at least 6 answers came through since: a token bucket lets
  its stored burst through before it throttles, which says nothing of its rate, and exactly
  its rate while it throttles. With send times (the check client's), it counts the requests
  sent from the first throttled one (or from the step) that were let through, over the
  send times they span (BBR's delivery rate): answers of the burst may arrive after the
  first throttle (new connections are slower), and a server answers a throttle sooner than
  a check, so counting by answer time put a 300/s limit at 685/s or at 250/s at 50 ms
  latency (benchmarks/run.py). Until a check sent since could have answered (the latest
  check's latency), or while the answers counted were sent together (under 20 ms apart),
  it is too soon to tell;
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
    __slots__ = (
        "_episode",
        "_last_throttle_at",
        "_mark_due",
        "_marks",
        "accepted",
        "episode_accepted",
        "episode_last_sent",
        "episode_sent_from",
        "ok_latency",
    )

    def __init__(self) -> None:
        self.accepted = 0
        self._marks: deque[tuple[float, int]] = deque(maxlen=_MARKS)
        self._mark_due = -math.inf
        self._last_throttle_at = -math.inf
        self._episode = -math.inf  # when throttling began (its first throttle answered)
        # Answers let through of requests sent from `episode_sent_from` on (`let_through`).
        self.episode_accepted = 0
        self.episode_sent_from = -math.inf
        self.episode_last_sent = -math.inf
        self.ok_latency = 0.0  # the latest answer let through: its latency

    def let_through(self, sent_at: float | None, now: float) -> None:
        """One answer let through, now; `sent_at` its request's send time, when known."""
        self.accepted += 1
        if sent_at is None:
            self.episode_accepted += 1
            return
        self.ok_latency = now - sent_at
        if sent_at >= self.episode_sent_from:
            self.episode_accepted += 1
            if sent_at > self.episode_last_sent:
                self.episode_last_sent = sent_at

    def mark(self, now: float) -> None:
        """Take a checkpoint if one is due (called as requests go out)."""
        if now >= self._mark_due:
            self._marks.append((now, self.accepted))
            self._mark_due = now + MARK_SECONDS

    def throttled(self, now: float, sent_at: float | None = None) -> None:
        if now - self._last_throttle_at > WINDOW_SECONDS:
            # Only requests sent from the first throttled one's send time count: an answer
            # of a request the server took earlier (from its stored burst) may arrive later
            # than the first throttle, the first connections being slower to set up.
            self._begin(now, -math.inf if sent_at is None else sent_at)
        self._last_throttle_at = now

    def restart(self, now: float) -> None:
        """Measure the requests sent from now on (a step was taken while the server stays
        full)."""
        self._begin(now, now)

    def _begin(self, at: float, sent_from: float) -> None:
        self._episode = at
        self.episode_sent_from = sent_from
        self.episode_last_sent = sent_from
        self.episode_accepted = 0

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
            through = self.episode_accepted
            if through == 0 and now - self.episode_sent_from < self.ok_latency:
                return None  # a throttle comes back sooner than a check: too soon to tell
            if self.episode_last_sent > self.episode_sent_from:
                # By send time: of the requests sent since throttling began, up to the
                # latest one answered, how many were let through (BBR's delivery rate).
                # Answer times would miss the latency of the last ones still out, and a
                # server answers a throttle sooner than a check.
                span = self.episode_last_sent - self.episode_sent_from
                if through >= MIN_DELIVERED:
                    return (through / span, through) if span >= MIN_DELIVERY_SECONDS else None
            elif through >= MIN_DELIVERED and now - self._episode >= MIN_DELIVERY_SECONDS:
                return through / (now - self._episode), through
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
