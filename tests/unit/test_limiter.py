"""AdaptiveRateLimiter on virtual time: pacing, bursts, window bound, AIMD. No wall clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from audit_job.limiter import GUARD_SLACK_SECONDS, PACING_MARGIN, AdaptiveRateLimiter


class VirtualTime:
    """A clock and a sleep for the limiter; `run` advances time from one timer to the next.

    Sleepers are woken one at a time in deadline order and run until they block again
    before time moves on, as an event loop would. `lateness` makes every wake-up late by a
    chosen amount, like a busy loop does.
    """

    def __init__(self, start: float = 1000.0, lateness: Callable[[], float] | None = None):
        self.now = start
        self.lateness = lateness
        self.sleeps: list[float] = []
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        assert delay >= 0, delay
        self.sleeps.append(delay)
        extra = self.lateness() if self.lateness else 0.0
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + delay + extra, self._seq, future))
        self._seq += 1
        await future

    def advance(self, seconds: float) -> None:
        assert not self._timers
        self.now += seconds

    async def run(self, *coros: Coroutine[Any, Any, Any]) -> list[Any]:
        tasks = [asyncio.ensure_future(c) for c in coros]
        while True:
            for _ in range(5):  # let every woken task run up to its next sleep
                await asyncio.sleep(0)
            if all(task.done() for task in tasks):
                return [task.result() for task in tasks]
            while self._timers and self._timers[0][2].cancelled():
                heapq.heappop(self._timers)
            assert self._timers, "tasks are blocked but nobody sleeps: deadlock"
            when, _, future = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            future.set_result(None)


def make(vt: VirtualTime, rate: float, **kwargs: Any) -> AdaptiveRateLimiter:
    return AdaptiveRateLimiter(rate, clock=vt.clock, sleep=vt.sleep, **kwargs)


async def acquire_n(limiter: AdaptiveRateLimiter, vt: VirtualTime, n: int) -> list[float]:
    times = []
    for _ in range(n):
        await limiter.acquire()
        times.append(vt.now)
    return times


def busiest_window(times: list[float], window: float = 1.0) -> int:
    """Most releases in any half-open window [t, t + window), as the emulator counts."""
    ordered = sorted(times)
    best = start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


# Pacing and bursts.


async def test_single_caller_is_paced_at_the_rate() -> None:
    vt = VirtualTime()
    limiter = make(vt, 10)
    [times] = await vt.run(acquire_n(limiter, vt, 30))
    assert times[0] == 1000.0  # the first request never waits
    assert gaps(times) == pytest.approx([0.1 * PACING_MARGIN] * 29)
    assert len(vt.sleeps) == 29  # one sleep per paced request, no polling


async def test_idle_time_earns_no_burst_by_default() -> None:
    vt = VirtualTime()
    limiter = make(vt, 20)
    await vt.run(acquire_n(limiter, vt, 3))
    vt.advance(3600.0)
    start = vt.now
    times = await vt.run(*(acquire_n(limiter, vt, 1) for _ in range(5)))
    released = sorted(t for [t] in times)
    assert released[0] == start
    assert gaps(released) == pytest.approx([0.05 * PACING_MARGIN] * 4)


async def test_configured_burst_then_pacing() -> None:
    vt = VirtualTime()
    limiter = make(vt, 10, burst=4)
    results = await vt.run(*(acquire_n(limiter, vt, 1) for _ in range(8)))
    released = sorted(t for [t] in results)
    assert released[:4] == [1000.0] * 4
    assert gaps(released[3:]) == pytest.approx([0.1 * PACING_MARGIN] * 4)


async def test_burst_never_breaks_the_window_bound() -> None:
    vt = VirtualTime()
    limiter = make(vt, 10, burst=10)
    results = await vt.run(*(acquire_n(limiter, vt, 5) for _ in range(8)))
    released = [t for times in results for t in times]
    assert released.count(1000.0) == 10
    assert busiest_window(released) == 10
    assert min(t for t in released if t > 1000.0) >= 1001.0  # the 11th waits a full second


async def test_fractional_rate_below_one() -> None:
    vt = VirtualTime()
    limiter = make(vt, 0.5, min_rate=0.1)
    [times] = await vt.run(acquire_n(limiter, vt, 4))
    assert gaps(times) == pytest.approx([2.0 * PACING_MARGIN] * 3)


async def test_fractional_rate_is_held_to_its_floor_per_window() -> None:
    vt = VirtualTime()
    limiter = make(vt, 2.5)
    results = await vt.run(*(acquire_n(limiter, vt, 5) for _ in range(4)))
    released = [t for times in results for t in times]
    assert busiest_window(released) == 2


# Many concurrent acquirers.


@pytest.mark.parametrize("rate", [7, 50, 333])
async def test_concurrent_acquirers_are_fair_and_bounded(rate: int) -> None:
    vt = VirtualTime()
    limiter = make(vt, rate)
    workers, each = 64, 10
    results = await vt.run(*(acquire_n(limiter, vt, each) for _ in range(workers)))
    released = sorted(t for times in results for t in times)
    assert len(released) == workers * each
    assert busiest_window(released) <= rate
    # Strict pacing: consecutive releases one interval apart, served in call order.
    assert min(gaps(released)) == pytest.approx(PACING_MARGIN / rate)
    assert released[-1] - released[0] == pytest.approx((len(released) - 1) * PACING_MARGIN / rate)
    # Fair: served in call order, so a worker waits at most one round of all the others.
    round_seconds = workers * PACING_MARGIN / rate
    for times in results:
        assert max(gaps(times)) <= round_seconds * (1 + 1e-9)
    # Cheap: one sleep per release at most, no polling.
    assert len(vt.sleeps) <= len(released)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_window_bound_holds_when_wakeups_are_late(seed: int) -> None:
    rng = random.Random(seed)
    # Late by up to 80 ms, occasionally by 400 ms: sleepers bunch up after a stall.
    vt = VirtualTime(lateness=lambda: rng.choice([0.0, 0.0, rng.uniform(0, 0.08), 0.4]))
    rate = 40
    limiter = make(vt, rate)
    results = await vt.run(*(acquire_n(limiter, vt, 8) for _ in range(64)))
    released = [t for times in results for t in times]
    assert len(released) == 512
    assert busiest_window(released) <= rate
    # The guard's slack: even a window GUARD_SLACK_SECONDS longer holds no more than the cap.
    assert busiest_window(released, 1.0 + GUARD_SLACK_SECONDS) <= rate
    # Lateness costs little throughput: 512 releases at 40/s take about 12.8 s.
    assert max(released) - min(released) < 512 / rate * 1.3


async def test_cancelled_waiter_does_not_block_others() -> None:
    vt = VirtualTime()
    limiter = make(vt, 10)

    async def scenario() -> list[float]:
        await limiter.acquire()
        victim = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0)
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
        return await acquire_n(limiter, vt, 3)

    [times] = await vt.run(scenario())
    assert times[0] >= 1000.0 + 0.1  # the cancelled slot is forfeited, never reused early
    assert busiest_window([1000.0, *times]) <= 10


async def test_works_with_the_real_event_loop() -> None:
    limiter = AdaptiveRateLimiter(5000)
    await asyncio.gather(*(limiter.acquire() for _ in range(50)))


# Adaptation (AIMD).


def test_throttle_decreases_multiplicatively() -> None:
    vt = VirtualTime()
    limiter = make(vt, 100)
    assert limiter.current_rate == 100
    assert limiter.on_throttle() is True
    assert limiter.current_rate == pytest.approx(70)


def test_a_volley_of_throttles_counts_once_per_second() -> None:
    vt = VirtualTime()
    limiter = make(vt, 100)
    decreases = [limiter.on_throttle() for _ in range(50)]
    assert decreases.count(True) == 1
    vt.advance(0.999)
    assert limiter.on_throttle() is False
    assert limiter.current_rate == pytest.approx(70)
    vt.advance(0.001)
    assert limiter.on_throttle() is True
    assert limiter.current_rate == pytest.approx(49)


def test_decrease_stops_at_min_rate() -> None:
    vt = VirtualTime()
    limiter = make(vt, 100, min_rate=5)
    for _ in range(30):
        limiter.on_throttle()
        vt.advance(1.0)
        limiter.on_throttle()
    assert limiter.current_rate == 5


def test_min_rate_above_cap_is_clamped_to_cap() -> None:
    vt = VirtualTime()
    limiter = make(vt, 0.5)  # default min_rate 1.0
    limiter.on_throttle()
    assert limiter.current_rate == 0.5


def test_recovery_climbs_linearly_back_to_the_cap() -> None:
    vt = VirtualTime()
    limiter = make(vt, 100)
    limiter.on_throttle()  # 70
    vt.advance(0.5)
    assert limiter.current_rate == pytest.approx(70)  # quiet period first
    vt.advance(0.5)
    assert limiter.current_rate == pytest.approx(70)
    vt.advance(1.0)
    assert limiter.current_rate == pytest.approx(75)  # +5 % of the cap per second
    vt.advance(2.0)
    assert limiter.current_rate == pytest.approx(85)
    limiter.on_success()
    vt.advance(2.0)
    assert limiter.current_rate == pytest.approx(95)
    vt.advance(100.0)
    assert limiter.current_rate == 100  # never above the cap


def test_recovery_restarts_after_a_new_throttle() -> None:
    vt = VirtualTime()
    limiter = make(vt, 100)
    limiter.on_throttle()
    vt.advance(3.0)
    assert limiter.current_rate == pytest.approx(80)
    limiter.on_throttle()
    assert limiter.current_rate == pytest.approx(56)
    vt.advance(1.0)
    assert limiter.current_rate == pytest.approx(56)
    vt.advance(1.0)
    assert limiter.current_rate == pytest.approx(61)


def test_recovery_is_the_same_however_often_it_is_read() -> None:
    sampled, unsampled = VirtualTime(), VirtualTime()
    a, b = make(sampled, 100), make(unsampled, 100)
    a.on_throttle()
    b.on_throttle()
    for _ in range(400):
        sampled.advance(0.01)
        a.on_success()
    unsampled.advance(4.0)
    assert a.current_rate == pytest.approx(b.current_rate)


async def test_pacing_follows_the_decreased_rate() -> None:
    vt = VirtualTime()
    limiter = make(vt, 100)
    limiter.on_throttle()  # 70/s, recovery not before 1 s from now
    [times] = await vt.run(acquire_n(limiter, vt, 20))
    assert gaps(times) == pytest.approx([PACING_MARGIN / 70] * 19)


async def test_throttle_then_recovery_under_load() -> None:
    vt = VirtualTime()
    limiter = make(vt, 50)

    async def throttled_at_start() -> list[float]:
        await limiter.acquire()
        limiter.on_throttle()
        return await acquire_n(limiter, vt, 400)

    [times] = await vt.run(throttled_at_start())
    early = [t for t in times if t < 1001.0]
    assert len(early) <= 36  # 35/s during the quiet second
    assert busiest_window(times) <= 50
    assert limiter.current_rate == 50  # fully recovered ~7 s later
    late = times[-50:]
    assert gaps(late) == pytest.approx([PACING_MARGIN / 50] * 49)


# set_cap


async def test_lowering_the_cap_applies_at_once() -> None:
    vt = VirtualTime()
    limiter = make(vt, 100)
    results = await vt.run(*(acquire_n(limiter, vt, 10) for _ in range(10)))
    limiter.set_cap(20)
    assert (limiter.cap, limiter.current_rate) == (20, 20)
    start = vt.now
    results = await vt.run(*(acquire_n(limiter, vt, 5) for _ in range(16)))
    released = [t for times in results for t in times]
    after = [t for t in released if t >= start + 1.0]
    assert busiest_window(after) <= 20


async def test_lowering_the_cap_reaches_waiters_already_in_the_guard() -> None:
    vt = VirtualTime()
    limiter = make(vt, 10, burst=10)

    async def lower_cap_soon() -> None:
        await vt.sleep(0.5)
        limiter.set_cap(5)

    results = await vt.run(lower_cap_soon(), *(acquire_n(limiter, vt, 1) for _ in range(16)))
    released = sorted(t for times in results[1:] for t in times)
    assert released[:10] == [1000.0] * 10  # the burst, before the cap changed
    later = [t for t in released if t > 1000.0]
    assert later and min(later) >= 1001.0  # held by the guard, now counting 5 per second
    assert busiest_window(later) <= 5


async def test_raising_the_cap_climbs_gradually() -> None:
    vt = VirtualTime()
    limiter = make(vt, 20)
    limiter.set_cap(40)
    assert limiter.current_rate == 20
    vt.advance(5.0)
    assert limiter.current_rate == pytest.approx(30)  # +2/s (5 % of 40)
    vt.advance(50.0)
    assert limiter.current_rate == 40


def test_lowering_the_cap_below_a_throttled_rate_keeps_the_lower() -> None:
    vt = VirtualTime()
    limiter = make(vt, 100)
    limiter.on_throttle()
    limiter.set_cap(90)
    assert limiter.current_rate == pytest.approx(70)


# Validation.


@pytest.mark.parametrize("rate", [0, -1, math.nan, math.inf, "10"])
def test_rate_must_be_positive_and_finite(rate: Any) -> None:
    with pytest.raises(ValueError, match="rate_per_second"):
        AdaptiveRateLimiter(rate)
    limiter = AdaptiveRateLimiter(10)
    with pytest.raises(ValueError, match="rate_per_second"):
        limiter.set_cap(rate)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"burst": 0},
        {"min_rate": 0},
        {"decrease_factor": 1.0},
        {"decrease_factor": 0},
        {"recovery_fraction": 0},
        {"min_throttles": 0},
        {"throttle_share": 1.0},
        {"decrease_interval_seconds": -1},
        {"recovery_delay_seconds": -1},
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AdaptiveRateLimiter(10, **kwargs)


def test_fast_recovery_climbs_quickly_to_the_remembered_ceiling_then_probes() -> None:
    vt = VirtualTime()
    limiter = AdaptiveRateLimiter(
        100,
        clock=vt.clock,
        decrease_factor=0.8,
        recovery_delay_seconds=0.5,
        recovery_fraction=0.02,
        fast_recovery_fraction=0.25,
    )
    limiter.on_throttle()  # at 100: ceiling 100, rate 80
    assert limiter.current_rate == pytest.approx(80)
    vt.advance(0.5)
    assert limiter.current_rate == pytest.approx(80)  # quiet period first
    vt.advance(0.4)
    assert limiter.current_rate == pytest.approx(90)  # +25 % of the cap per second
    vt.advance(0.28)
    assert limiter.current_rate == pytest.approx(97)  # the knee: 97 % of the ceiling
    vt.advance(1.0)
    assert limiter.current_rate == pytest.approx(99)  # then +2 % of the cap per second
    vt.advance(10)
    assert limiter.current_rate == 100


def test_fast_recovery_follows_a_lower_ceiling() -> None:
    vt = VirtualTime()
    limiter = AdaptiveRateLimiter(
        100,
        clock=vt.clock,
        decrease_factor=0.5,
        recovery_delay_seconds=0,
        recovery_fraction=0.01,
        fast_recovery_fraction=1.0,
    )
    limiter.on_throttle()  # ceiling 100 -> 50
    vt.advance(0.1)
    limiter.on_throttle()  # inside the decrease interval: ignored
    vt.advance(1.0)
    # The ignored throttle still applied 0.1 s of climb (50 -> 60); then 0.37 s to the knee
    # at 97, and 0.63 s at +1/s.
    assert limiter.current_rate == pytest.approx(97.63)
    limiter.on_throttle()  # ceiling 97.63 -> 48.815
    vt.advance(2)
    knee = 0.97 * 97.63
    assert limiter.current_rate == pytest.approx(knee + 1.0 * (2 - (knee - 48.815) / 100))


def test_fast_recovery_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="fast_recovery_fraction"):
        AdaptiveRateLimiter(10, fast_recovery_fraction=0)
    with pytest.raises(ValueError, match="fast_recovery_until"):
        AdaptiveRateLimiter(10, fast_recovery_fraction=0.2, fast_recovery_until=1.5)


def test_stray_throttles_do_not_cut_the_rate() -> None:
    vt = VirtualTime()
    limiter = make(vt, 1000, min_throttles=3, throttle_share=0.02)  # needs 20 within 1 s
    for _ in range(19):
        assert limiter.on_throttle() is False
        vt.advance(0.05)
    assert limiter.current_rate == 1000
    vt.advance(1.0)  # the earlier throttles age out of the window
    assert limiter.on_throttle() is False
    for _ in range(18):
        limiter.on_throttle()
    assert limiter.on_throttle() is True  # the 20th within one second
    assert limiter.current_rate == pytest.approx(700)


def test_the_share_threshold_follows_the_current_rate() -> None:
    vt = VirtualTime()
    limiter = make(vt, 100, min_throttles=3, throttle_share=0.5, decrease_factor=0.5)
    assert [limiter.on_throttle() for _ in range(50)][-1] is True  # 50 % of 100
    vt.advance(1.0)
    assert [limiter.on_throttle() for _ in range(25)][-1] is True  # 50 % of 50
    vt.advance(1.0)
    assert [limiter.on_throttle() for _ in range(3)][-1] is False  # needs 13 now
