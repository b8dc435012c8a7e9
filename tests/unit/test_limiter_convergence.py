"""The limiter's one-step convergence, delivery measure, warm start and rate-limit headers,
on a manual clock. The classic rules keep their own tests (test_limiter.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from virtual_loop import run_virtual

from audit_job.convergence import DeliveryMeter
from audit_job.limiter import PACING_MARGIN, AdaptiveRateLimiter

T0 = 1000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def converging(clock: Clock, rate: float = 1000.0, **kwargs: Any) -> AdaptiveRateLimiter:
    options: dict[str, Any] = {
        "decrease_factor": 0.9,
        "decrease_interval_seconds": 0.25,
        "recovery_delay_seconds": 0.5,
        "min_throttles": 3,
        "throttle_share": 0.02,
        "settle_fraction": 0.97,
        "probe_fraction": 0.01,
        "probe_after_seconds": 30.0,
    }
    options.update(kwargs)
    return AdaptiveRateLimiter(rate, clock=clock, **options)


def storm(
    limiter: AdaptiveRateLimiter,
    clock: Clock,
    *,
    accepted_per_second: float,
    throttled_per_second: float,
    seconds: float,
    until_step: bool = False,
) -> bool:
    """Answers at the given rates, interleaved, for `seconds` (or until the rate steps);
    each throttled request was sent 10 ms before its answer. True if the rate stepped."""
    stepped = False
    total = accepted_per_second + throttled_per_second
    ok_every = total / accepted_per_second if accepted_per_second else math.inf
    for i in range(round(total * seconds)):
        clock.advance(1 / total)
        limiter.try_acquire()  # requests go out (checkpoints are taken then)
        if accepted_per_second and i % ok_every < 1:
            limiter.on_success()
        elif limiter.on_throttle(clock.now - 0.01):
            stepped = True
            if until_step:
                break
    return stepped


def first_step(
    limiter: AdaptiveRateLimiter,
    clock: Clock,
    accepted: float,
    throttled: float,
    seconds: float = 5.0,
) -> float:
    """Storm until the rate steps; the time of the step."""
    assert storm(
        limiter,
        clock,
        accepted_per_second=accepted,
        throttled_per_second=throttled,
        seconds=seconds,
        until_step=True,
    )
    return clock.now


# One step to what the server let through.


def test_the_step_goes_to_what_came_through_since_throttling_began() -> None:
    clock = Clock()
    limiter = converging(clock)
    for _ in range(30):  # the server's stored burst: all through, before any throttle
        clock.advance(0.001)
        limiter.on_success()
    first_step(limiter, clock, 300, 700)
    # 300/s came through since the first throttle (the burst before it does not count):
    # the rate sends 97 % of that.
    assert limiter.pace == pytest.approx(0.97 * 300, rel=0.05)
    assert limiter.current_rate == pytest.approx(0.97 * 300 * PACING_MARGIN, rel=0.05)
    assert limiter.server_bounded


def test_without_the_convergence_step_the_cut_is_a_blind_factor() -> None:
    clock = Clock()
    limiter = converging(clock, settle_fraction=None)
    first_step(limiter, clock, 300, 700)
    assert limiter.current_rate == pytest.approx(900)  # x 0.9, far above the server's 300


def test_with_too_few_answers_the_step_falls_back_to_the_factor() -> None:
    clock = Clock()
    limiter = converging(clock)
    # 20 throttles and 2 answers through: no rate can be told from that.
    first_step(limiter, clock, 100, 1000)
    assert limiter.current_rate == pytest.approx(900)


def test_a_server_counting_whole_seconds_is_measured_over_the_last_second() -> None:
    clock = Clock()
    limiter = converging(clock)
    for _ in range(300):  # its quota of 300 goes through in the first 0.3 s...
        clock.advance(0.001)
        limiter.try_acquire()
        limiter.on_success()
    # ...then nothing at all: the quota is what came through in the last second.
    first_step(limiter, clock, 0, 1000)
    assert limiter.current_rate == pytest.approx(0.97 * 300 * PACING_MARGIN, rel=0.01)


def test_stray_throttles_still_do_not_step() -> None:
    clock = Clock()
    limiter = converging(clock)  # at 1000/s: 20 throttles within a second are needed
    assert not storm(limiter, clock, accepted_per_second=980, throttled_per_second=15, seconds=1)
    assert limiter.current_rate == 1000
    assert not limiter.server_bounded


def test_a_step_that_would_raise_the_rate_is_not_taken() -> None:
    clock = Clock()
    limiter = converging(clock)
    first_step(limiter, clock, 300, 700)
    stepped_to = limiter.current_rate
    # Answers of requests sent at the old rate: 400/s came through, throttles beyond
    # strays; 97 % of 400 is above the rate in force, and a throttle never raises it.
    # (0.45 s: before the recovery delay lets the rate probe upwards.)
    assert not storm(
        limiter, clock, accepted_per_second=400, throttled_per_second=100, seconds=0.45
    )
    assert limiter.current_rate == pytest.approx(stepped_to)


def test_throttles_of_requests_sent_before_the_step_are_not_counted() -> None:
    clock = Clock()
    limiter = converging(clock)
    step_at = first_step(limiter, clock, 300, 700)
    rate = limiter.current_rate
    clock.advance(0.3)
    for _ in range(50):  # the volley of requests that were in flight at the step
        clock.advance(0.001)
        assert not limiter.on_throttle(sent_at=step_at - 0.005)
    assert limiter.current_rate == pytest.approx(rate)
    # Fresh throttles (sent after the step) of the same number do step.
    assert storm(limiter, clock, accepted_per_second=200, throttled_per_second=200, seconds=0.5)
    assert limiter.current_rate < rate


def test_the_next_step_measures_from_the_last_one() -> None:
    clock = Clock()
    limiter = converging(clock)
    first_step(limiter, clock, 400, 600)
    assert limiter.current_rate == pytest.approx(0.97 * 400 * PACING_MARGIN, rel=0.05)
    # The server lets 300/s through; fresh throttles keep coming at 60/s: the next step
    # measures what came through since the first one (the server full on both sides).
    assert storm(limiter, clock, accepted_per_second=300, throttled_per_second=60, seconds=0.5)
    assert limiter.current_rate == pytest.approx(0.97 * 300 * PACING_MARGIN, rel=0.01)


# After a step: probing, holding, what is remembered.


def test_a_rough_step_probes_fast_and_is_not_remembered() -> None:
    clock = Clock()
    limiter = converging(clock)
    first_step(limiter, clock, 300, 700)
    stepped = limiter.current_rate
    assert limiter.settled_rate is None  # measured on a few answers: not a learning
    clock.advance(0.5)  # the recovery delay
    assert limiter.current_rate == pytest.approx(stepped)
    clock.advance(1.0)
    assert limiter.current_rate == pytest.approx(stepped * 1.05)  # 5 x 1 % a second


def test_a_precise_clear_step_holds_then_probes_slowly() -> None:
    clock = Clock()
    limiter = converging(clock)
    first_step(limiter, clock, 300, 20)  # 20 throttles take a second: 300 answers through
    stepped = limiter.current_rate
    assert stepped == pytest.approx(0.97 * 300 * PACING_MARGIN, rel=0.02)
    assert limiter.settled_rate == pytest.approx(stepped)  # precise: remembered
    clock.advance(29.9)
    assert limiter.current_rate == pytest.approx(stepped)  # held
    clock.advance(10.1)
    assert limiter.current_rate == pytest.approx(stepped * 1.1)  # then +1 % a second
    clock.advance(10_000)
    assert limiter.current_rate == 1000
    assert not limiter.server_bounded  # back at the cap: the server no longer bounds it


def test_a_small_first_step_does_not_hold() -> None:
    """A cluster of "system busy" answers beyond the stray threshold steps a little; that
    is no limit to sit under for half a minute."""
    clock = Clock()
    limiter = converging(clock, 500.0)
    first_step(limiter, clock, 480, 15)
    stepped = limiter.current_rate
    assert 0.9 * 500 < stepped < 500
    clock.advance(0.5 + 2.0)
    assert limiter.current_rate == pytest.approx(stepped * 1.02)


def test_a_warm_start_begins_bounded_at_the_learned_rate_and_holds() -> None:
    clock = Clock()
    limiter = converging(clock, initial_rate=291.0)
    assert limiter.current_rate == 291.0
    assert limiter.server_bounded and limiter.settled_rate == 291.0
    clock.advance(29.0)
    assert limiter.current_rate == 291.0
    clock.advance(11.0)
    assert limiter.current_rate == pytest.approx(291.0 * 1.1)


def test_a_warm_start_at_or_above_the_cap_is_just_the_cap() -> None:
    clock = Clock()
    limiter = converging(clock, rate=200.0, initial_rate=291.0)
    assert limiter.current_rate == 200.0 and not limiter.server_bounded


def test_the_warm_start_rate_steps_at_once_when_the_limit_dropped() -> None:
    clock = Clock()
    limiter = converging(clock, initial_rate=291.0)
    first_step(limiter, clock, 150, 140)  # a rough step at once...
    assert limiter.current_rate < 291.0
    storm(limiter, clock, accepted_per_second=150, throttled_per_second=140, seconds=0.5)
    # ...then one measured on what came through since throttling began (a cut by a factor,
    # with too few answers to measure, does not restart the measure).
    assert limiter.current_rate == pytest.approx(0.97 * 150 * PACING_MARGIN, rel=0.02)


def test_lowering_the_cap_under_a_bounded_rate_hands_the_bound_to_the_cap() -> None:
    clock = Clock()
    limiter = converging(clock, initial_rate=291.0)
    limiter.set_cap(150.0)
    assert limiter.current_rate == 150.0 and not limiter.server_bounded


def test_delivered_rate_is_the_last_whole_second() -> None:
    clock = Clock()
    limiter = converging(clock)
    assert limiter.delivered_rate() is None
    for _ in range(500):  # 250/s for 2 s
        clock.advance(0.004)
        limiter.try_acquire()
        limiter.on_success()
    assert limiter.delivered_rate() == pytest.approx(250, rel=0.1)


def test_delivery_meter_needs_enough_answers() -> None:
    meter = DeliveryMeter()
    meter.mark(T0)
    meter.throttled(T0)
    for _ in range(5):
        meter.let_through(None, T0)
    assert meter.rate(T0 + 0.1, since_throttling=True) is None
    meter.let_through(None, T0)
    assert meter.rate(T0 + 0.1, since_throttling=True) == (pytest.approx(60), 6)


def test_with_send_times_only_requests_sent_while_throttled_count() -> None:
    """The first throttled request went out at T0; answers of requests the server took
    from its stored burst, sent before it, still arrive after it (slower new connections)
    and say nothing of its rate. Of those sent after it, 3 per 10 ms came through."""
    meter = DeliveryMeter()
    meter.throttled(T0 + 0.05, sent_at=T0)
    for i in range(20):  # sent before T0, answered late
        meter.let_through(T0 - 0.02 + i * 0.001, T0 + 0.06)
    for i in range(30):  # sent over T0 .. T0 + 0.1: 300/s
        meter.let_through(T0 + (i + 1) / 300, T0 + 0.05 + (i + 1) / 300)
    per_second, counted = meter.rate(T0 + 0.15, since_throttling=True)
    assert counted == 30
    assert per_second == pytest.approx(300)


def test_a_throttle_answered_sooner_than_a_check_is_too_soon_to_measure() -> None:
    """Throttles come back in 1 ms, checks in 50 ms: until a check sent since throttling
    began could have answered, nothing let through says nothing."""
    meter = DeliveryMeter()
    meter.mark(T0 - 2.0)  # a whole second seen: the quota rule would apply
    for i in range(10):  # a quota of 10 let through; checks take 50 ms
        meter.let_through(T0 - 0.06 + i * 0.001, T0 - 0.01 + i * 0.001)
    meter.throttled(T0 + 0.001, sent_at=T0)
    assert meter.rate(T0 + 0.02, since_throttling=True) is None
    # Still nothing through a check's latency later: a quota counter's silence, measured
    # over the last second.
    assert meter.rate(T0 + 0.06, since_throttling=True) == (10.0, 10)


def test_answers_sent_together_are_too_soon_to_tell_a_rate() -> None:
    """Six let through, all sent in one event-loop turn with the first throttled one."""
    meter = DeliveryMeter()
    meter.throttled(T0 + 0.01, sent_at=T0)
    for _ in range(5):
        meter.let_through(T0, T0 + 0.01)
    meter.let_through(T0 + 0.001, T0 + 0.011)
    assert meter.rate(T0 + 0.02, since_throttling=True) is None


# Rate-limit headers.


def test_headers_hold_the_rate_to_the_remaining_budget_until_the_reset() -> None:
    clock = Clock()
    limiter = converging(clock)
    limiter.on_rate_limit(remaining=50, reset_seconds=2.0)
    assert limiter.current_rate == 25.0
    clock.advance(1.99)
    assert limiter.current_rate == 25.0
    clock.advance(0.02)
    assert limiter.current_rate == 1000  # the hint ended with its window


def test_headers_never_raise_the_rate_above_the_cap_or_the_adaptive_rate() -> None:
    clock = Clock()
    limiter = converging(clock, 100.0)
    limiter.on_rate_limit(remaining=5000, reset_seconds=1.0)
    assert limiter.current_rate == 100.0


@pytest.mark.parametrize(
    ("remaining", "reset"), [(10, 0), (10, -1), (math.nan, 1), (10, math.inf), (math.inf, 1)]
)
def test_nonsense_headers_change_nothing(remaining: float, reset: float) -> None:
    clock = Clock()
    limiter = converging(clock, 100.0)
    limiter.on_rate_limit(remaining, reset)
    assert limiter.current_rate == 100.0
    assert limiter.try_acquire()


def test_an_empty_budget_holds_every_request_until_the_reset() -> None:
    async def scenario() -> list[float]:
        import asyncio

        loop = asyncio.get_running_loop()
        limiter = AdaptiveRateLimiter(100.0, clock=loop.time)
        limiter.on_rate_limit(remaining=0, reset_seconds=3.0)
        released = []
        for _ in range(3):
            await limiter.acquire()
            released.append(loop.time() - T0)
        return released

    released = run_virtual(scenario(), start=T0)
    assert released[0] == pytest.approx(3.0)
    assert released[2] - released[0] == pytest.approx(2 * PACING_MARGIN / 100)


def test_pace_is_the_rate_under_the_pacing_margin() -> None:
    limiter = converging(Clock(), 500.0)
    assert limiter.pace == pytest.approx(500 / PACING_MARGIN)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"settle_fraction": 1.0},
        {"settle_fraction": 0},
        {"probe_fraction": 0},
        {"probe_after_seconds": -1},
        {"initial_rate": 0},
        {"initial_rate": math.nan},
    ],
)
def test_bad_convergence_settings_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AdaptiveRateLimiter(10, **kwargs)


def test_a_step_goes_at_most_to_a_quarter_of_the_rate_and_counts_as_rough() -> None:
    """What came through is what a stalled client sent: 50/s at a rate of 1,000/s."""
    clock = Clock()
    limiter = converging(clock)
    first_step(limiter, clock, 50, 20, seconds=10.0)
    assert limiter.current_rate == pytest.approx(250)
    assert limiter.settled_rate is None  # not remembered for a later run
    clock.advance(1.5)  # no 30 s hold: it probes at the rough speed after the recovery delay
    assert limiter.current_rate == pytest.approx(250 * 1.05)


def test_without_the_bound_a_stalled_client_drops_the_rate_far_below_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("audit_job.convergence.MAX_STEP_DOWN", 0.0)
    clock = Clock()
    limiter = converging(clock)
    first_step(limiter, clock, 50, 20, seconds=10.0)
    assert limiter.current_rate < 60  # a twentieth of the rate, from one stalled measure
