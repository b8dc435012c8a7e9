"""The adaptive in-flight limit on an injected clock: Little's law, the startup bound, the
gradient and its verdict, and the gate (order, runtime limit, cancellation). No wall clock."""

from __future__ import annotations

import asyncio
import math

import pytest
from virtual_loop import run_virtual

import audit_job.concurrency
from audit_job.concurrency import (
    CUT_TO,
    HEADROOM,
    INITIAL_CAP,
    INTERVAL_SAMPLES,
    AdaptiveConcurrency,
)
from audit_job.inflight_gate import InFlightGate, gate_for

T0 = 1000.0


def need(rate: float, latency: float) -> int:
    """ceil(rate x latency x headroom), products that are integers up to rounding kept so."""
    return math.ceil(rate * latency * HEADROOM - 1e-9)


def feed(
    rule: AdaptiveConcurrency,
    latencies: list[float],
    start: float,
    seconds: float,
    rate: float = math.inf,
    lag: float = 0.0,
) -> float:
    """Answers spread evenly over `seconds` from `start` (the limiter letting out `rate`,
    the client `lag` late); returns the time after them."""
    step = seconds / len(latencies)
    now = start
    for latency in latencies:
        now += step
        rule.observe(latency, now, rate, lag)
    return now


def spread(center: float, n: int = 64) -> list[float]:
    """n latencies evenly spread over center +-10 %, in a scrambled order."""
    values = [center * (0.9 + 0.2 * i / (n - 1)) for i in range(n)]
    return values[::2] + values[1::2]


def steady(
    rule: AdaptiveConcurrency,
    latency: float,
    in_flight: float,
    seconds: float,
    start: float,
    pace: float = math.inf,
    lag: float = 0.0,
) -> float:
    """Intervals of answers at `latency` with `in_flight` requests out (Little: the answer
    rate is in_flight / latency); returns the time at the end."""
    rate = in_flight / latency
    count = max(INTERVAL_SAMPLES, round(rate * seconds))
    return feed(rule, [latency] * count, start, count / rate, pace, lag)


# Little's law.


def test_the_limit_is_littles_law_at_the_high_percentile() -> None:
    rule = AdaptiveConcurrency()
    now = feed(rule, spread(0.2, 256), T0, 2.0)
    p90 = sorted(spread(0.2, 256))[int(0.9 * 256)]
    assert rule.limit(500, now, None) == need(500, p90)
    assert rule.limit(250, now, None) == need(250, p90)  # follows the rate
    assert rule.limit(100_000, now, None) == 256  # bounded above
    assert rule.limit(1, now, None) == 1  # and below


def test_a_pinned_lower_and_upper_bound() -> None:
    rule = AdaptiveConcurrency(min_limit=4, max_limit=40)
    now = feed(rule, spread(0.01), T0, 1.0)
    assert rule.limit(10, now, None) == 4
    assert rule.limit(100_000, now, None) == 40


def test_before_any_answer_the_oldest_requests_age_bounds_the_latency() -> None:
    rule = AdaptiveConcurrency()
    assert not rule.warmed_up
    assert rule.limit(500, T0, None) == 1  # nothing sent yet
    assert rule.limit(500, T0 + 0.1, T0) == need(500, 0.1)  # 55
    assert rule.limit(500, T0 + 0.11, T0) == need(500, 0.11)  # grows with age
    assert rule.limit(500, T0 + 0.4, T0) == INITIAL_CAP  # up to the slow start's cap
    # The first answers: their slowest counts until an interval has closed.
    rule.observe(0.2, T0 + 0.5)
    rule.observe(0.25, T0 + 0.5)
    assert rule.warmed_up
    assert rule.limit(200, T0 + 5.0, T0) == need(200, 0.25)  # 55: under the cap (66)


def test_slow_start_doubles_the_cap_each_round_trip_until_the_first_cut() -> None:
    """The first requests out meet an unloaded server, so the baseline is its latency, not
    that of a queue the client built before any answer came back."""
    rule = AdaptiveConcurrency()
    assert rule.limit(100_000, T0 + 0.05, T0) == INITIAL_CAP == 64
    now = feed(rule, [0.02] * 64, T0 + 0.02, 0.001)  # one round trip of answers
    assert rule.limit(100_000, now, T0) == 128
    now = steady(rule, 0.020, 40, 0.5, now)  # 20 ms at 40 in flight: the baseline
    assert rule.baseline_seconds == pytest.approx(0.020)
    assert rule.cap == 256
    now = steady(rule, 0.100, 250, 0.2, now)  # a queue: cut, and the slow start is over
    cut = rule.cap
    feed(rule, [0.02] * 10, now, 0.001)  # too few for an interval: no growth either
    assert rule.cap == cut < 256


def test_a_nonsense_latency_is_ignored() -> None:
    rule = AdaptiveConcurrency()
    for value in (-1.0, math.nan, math.inf):
        assert rule.observe(value, T0) is False
    assert not rule.warmed_up


# The gradient.


def test_latency_growing_with_load_cuts_the_cap_in_one_step() -> None:
    rule = AdaptiveConcurrency()
    now = steady(rule, 0.020, 40, 0.5, T0)  # below capacity: the baseline, 20 ms
    assert rule.baseline_seconds == pytest.approx(0.020)
    assert rule.cap == 256
    # 250 in flight at a server serving 50 at a time: five times the latency.
    now = steady(rule, 0.100, 250, 0.2, now)
    # 250 x 1.2 / 5: what brings the median down to 1.2 x the baseline, clearly under the
    # 1.5 x that cuts (a cut to exactly the tolerance leaves its verdict to noise).
    assert CUT_TO == 1.2
    assert rule.cap == pytest.approx(60, rel=0.02)
    assert rule.limit(10_000, now, None) == math.floor(rule.cap)


def test_latency_within_tolerance_cuts_nothing_and_the_cap_grows_back() -> None:
    rule = AdaptiveConcurrency()
    now = steady(rule, 0.020, 40, 0.5, T0)
    now = steady(rule, 0.100, 250, 0.2, now)
    cut = rule.cap
    now = steady(rule, 0.029, 75, 0.3, now + 0.2)  # 1.45 x the baseline: tolerated
    assert rule.cap > cut
    grown = rule.cap
    now = steady(rule, 0.029, 75, 0.1, now)
    assert rule.cap == pytest.approx(grown * 1.1)  # +10 % an interval


def test_milliseconds_of_host_jitter_are_not_a_queue() -> None:
    """2 ms answers turning 5 ms (2.5 x) on a busy client host: no server queue to drain."""
    rule = AdaptiveConcurrency()
    now = steady(rule, 0.002, 2, 0.5, T0)
    steady(rule, 0.005, 2, 0.5, now)
    assert rule.cap == 256


def test_without_the_queue_floor_host_jitter_starves_the_run() -> None:
    rule = AdaptiveConcurrency(queue_floor=0.0)
    now = steady(rule, 0.002, 2, 0.5, T0)
    steady(rule, 0.005, 2, 0.5, now)
    assert rule.cap < 2  # one request in flight: a 300/s run at 5 ms gets 200/s at most


def test_while_the_pacer_sets_the_pace_a_slower_answer_cuts_nothing() -> None:
    """500/s paced out and 500/s answered, at three times the baseline: fewer in flight
    would only lower the rate (SHORTFALL)."""
    rule = AdaptiveConcurrency()
    now = steady(rule, 0.020, 10, 0.5, T0, pace=500)
    steady(rule, 0.060, 30, 0.5, now, pace=500)
    assert rule.cap == 256


def test_without_the_shortfall_rule_a_paced_run_is_cut() -> None:
    rule = AdaptiveConcurrency()
    now = steady(rule, 0.020, 10, 0.5, T0)  # no pace known: any slowdown may be a queue
    steady(rule, 0.060, 30, 0.5, now)
    assert rule.cap < 30


def test_the_clients_own_lateness_is_not_a_server_queue() -> None:
    """A 5 ms API seen at 17 ms by a CPU-starved client whose paced sleeps wake 12 ms late;
    it falls short of its 500/s, but the server is no slower: no cut."""
    rule = AdaptiveConcurrency()
    now = steady(rule, 0.005, 2.5, 0.5, T0, pace=500)
    steady(rule, 0.017, 5, 0.5, now, pace=500, lag=0.012)
    assert rule.cap == 256


def test_without_the_lateness_a_starved_client_cuts_its_own_limit() -> None:
    rule = AdaptiveConcurrency()
    now = steady(rule, 0.005, 2.5, 0.5, T0, pace=500)
    steady(rule, 0.030, 10, 0.5, now, pace=500)  # 25 ms late: beyond the queue floor
    assert rule.cap < 10


def test_a_real_queue_is_cut_even_on_a_late_client() -> None:
    """The lateness is taken off the median, not a licence to ignore the server."""
    rule = AdaptiveConcurrency()
    now = steady(rule, 0.020, 40, 0.5, T0, pace=10_000)
    steady(rule, 0.100, 250, 0.2, now, pace=10_000, lag=0.005)
    assert rule.cap < 100


def test_gradient_disabled_never_cuts() -> None:
    rule = AdaptiveConcurrency(gradient=False)
    now = steady(rule, 0.020, 40, 0.5, T0)
    now = steady(rule, 0.100, 250, 0.5, now)
    assert rule.cap == 256
    assert rule.limit(10_000, now, None) == 256


def test_answers_sent_before_a_cut_cannot_judge_it() -> None:
    rule = AdaptiveConcurrency()
    now = steady(rule, 0.020, 40, 0.5, T0)
    while rule.cap == 256:  # 250 in flight at five times the latency: cut
        now = steady(rule, 0.100, 250, 0.01, now)
    cut, cut_at = rule.cap, now
    # The next interval starts at the cut, so its answers were sent before it: the latency
    # looks fine, but nothing is concluded (no growth).
    now = steady(rule, 0.025, 62.5, 0.1, now)  # the server still answers 2,500/s
    assert now - cut_at < 0.1 + 1e-9
    assert rule.cap == cut
    # One starting a median latency (100 ms) after the cut is judged: fine, so it grows.
    now = steady(rule, 0.025, 62.5, 0.1, now)
    assert rule.cap == pytest.approx(cut * 1.1)


def test_a_cut_that_costs_answers_is_undone() -> None:
    """A client busy with its own CPU: latency grows with what it has in flight, as at a
    saturated server, but a cut does not keep the answers coming: it is undone."""
    rule = AdaptiveConcurrency()
    now = steady(rule, 0.002, 4, 0.5, T0)  # an idle client's start: 2 ms, 2,000/s
    now = steady(rule, 0.050, 100, 0.3, now)  # 2,000/s at 50 ms: the client's own queue
    assert rule.cap < 10
    now = steady(rule, 0.005, rule.cap, 0.6, now)  # 1,200/s: the cut cost answers
    assert rule.cap == 256
    assert rule.baseline_seconds == pytest.approx(0.005)


def test_without_the_answers_verdict_the_busy_client_stays_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(audit_job.concurrency, "_KEPT", 0.0)
    rule = AdaptiveConcurrency()
    now = steady(rule, 0.002, 4, 0.5, T0)
    now = steady(rule, 0.050, 100, 0.3, now)
    now = steady(rule, 0.005, rule.cap, 0.3, now)
    assert rule.cap < 10


def test_a_slowdown_that_is_not_ours_moves_the_baseline() -> None:
    rule = AdaptiveConcurrency()
    now = steady(rule, 0.200, 100, 2.0, T0)  # 500/s at 200 ms
    now = steady(rule, 0.400, 200, 0.2, now)  # the API doubles its latency for everyone
    cut = rule.cap
    assert cut < 200
    # Fewer in flight, the same latency: the verdict is "not ours".
    now = steady(rule, 0.400, cut, 0.4, now + 0.4)
    assert rule.baseline_seconds == pytest.approx(0.400)
    for _ in range(20):
        now = steady(rule, 0.400, rule.limit(500, now, None), 0.1, now)
    assert rule.limit(500, now, None) >= math.ceil(500 * 0.4)  # back to what the rate needs


def test_a_standing_queue_never_creeps_the_baseline_up() -> None:
    rule = AdaptiveConcurrency()
    now = steady(rule, 0.020, 40, 0.5, T0)
    for _ in range(300):  # 30 s at 1.45 x the baseline
        now = steady(rule, 0.029, 72, 0.1, now)
    assert rule.baseline_seconds == pytest.approx(0.020)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_limit": 0},
        {"min_limit": 10, "max_limit": 5},
        {"headroom": 0.9},
        {"percentile": 0},
        {"tolerance": 1.0},
        {"growth": 0},
        {"queue_floor": -1},
        {"initial_cap": 0},
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AdaptiveConcurrency(**kwargs)  # type: ignore[arg-type]


# The gate.


def test_a_fixed_gate_admits_up_to_its_limit_in_arrival_order() -> None:
    async def scenario() -> list[int]:
        gate = InFlightGate(2)
        order: list[int] = []

        async def attempt(n: int) -> None:
            await gate.acquire()
            order.append(n)
            await asyncio.sleep(1.0)
            gate.release()

        await asyncio.gather(*(attempt(n) for n in range(7)))
        assert (gate.in_flight, gate.peak) == (0, 2)
        return order

    assert run_virtual(scenario()) == list(range(7))


def test_try_acquire_never_overtakes_a_waiter() -> None:
    async def scenario() -> None:
        gate = InFlightGate(1)
        assert gate.try_acquire()
        waiter = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        gate.release()  # the slot goes to the waiter at once
        assert gate.try_acquire() is False
        await waiter
        assert gate.in_flight == 1

    run_virtual(scenario())


def test_raising_the_limit_wakes_waiters_and_lowering_lets_extra_requests_finish() -> None:
    async def scenario() -> None:
        gate = InFlightGate(1)
        assert gate.try_acquire()
        waiters = [asyncio.ensure_future(gate.acquire()) for _ in range(3)]
        await asyncio.sleep(0)
        assert gate.waiting == 3
        gate.set_limit(3)
        await asyncio.sleep(0)
        assert gate.in_flight == 3 and gate.waiting == 1
        gate.set_limit(1)  # nobody is cut off; the next slot waits for two releases
        gate.release()
        gate.release()
        await asyncio.sleep(0)
        assert not waiters[2].done()
        gate.release()
        await asyncio.sleep(0)
        assert waiters[2].done() and gate.in_flight == 1

    run_virtual(scenario())


def test_a_cancelled_waiter_takes_no_slot() -> None:
    async def scenario() -> None:
        gate = InFlightGate(1)
        assert gate.try_acquire()
        victim = asyncio.ensure_future(gate.acquire())
        other = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        victim.cancel()
        await asyncio.sleep(0)
        gate.release()
        await other
        assert gate.in_flight == 1 and victim.cancelled()

    run_virtual(scenario())


def test_a_waiter_cancelled_just_after_its_admission_hands_the_slot_on() -> None:
    async def scenario() -> None:
        gate = InFlightGate(1)
        assert gate.try_acquire()
        victim = asyncio.ensure_future(gate.acquire())
        other = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        gate.release()  # admits the victim...
        victim.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await victim
        await other
        assert gate.in_flight == 1

    run_virtual(scenario())


def test_an_adaptive_gate_grows_with_the_oldest_requests_age_before_any_answer() -> None:
    async def scenario() -> list[tuple[float, int]]:
        loop = asyncio.get_running_loop()
        gate = InFlightGate(rule=AdaptiveConcurrency(), rate=lambda: 500.0, clock=loop.time)
        admitted: list[tuple[float, int]] = []

        async def attempt() -> None:
            await gate.acquire()
            admitted.append((loop.time() - T0, gate.in_flight))

        tasks = [asyncio.ensure_future(attempt()) for _ in range(60)]
        await asyncio.sleep(0.1)
        assert gate.in_flight == need(500, 0.1)  # 55 after 100 ms
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return admitted

    admitted = run_virtual(scenario(), start=T0)
    # Admitted one by one as the bound grows: never more than 500 x age x 1.1 (+1).
    for at, in_flight in admitted:
        assert in_flight <= 500 * at * HEADROOM + 1 + 1e-9


def test_an_adaptive_gate_follows_the_rule_and_the_rate() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        rate = [500.0]
        gate = InFlightGate(rule=AdaptiveConcurrency(), rate=lambda: rate[0], clock=loop.time)
        for _ in range(64):  # answers at 100 ms, one every 5 ms
            assert gate.try_acquire()
            await asyncio.sleep(0.005)
            gate.release(0.1)
        assert gate.limit == need(500, 0.1)
        rate[0] = 50.0  # the rate limiter cut the rate: the limit follows at the next ask
        taken = 0
        while gate.try_acquire():
            taken += 1
        assert taken == need(50, 0.1)

    run_virtual(scenario(), start=T0)


def test_gate_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="limit"):
        InFlightGate(0)
    with pytest.raises(ValueError, match="rate"):
        InFlightGate(rule=AdaptiveConcurrency())
    with pytest.raises(ValueError, match="limit"):
        InFlightGate(4).set_limit(0)


def test_gate_for_a_pinned_concurrency() -> None:
    pinned = gate_for(3, rate=lambda: 1000.0)
    assert [pinned.try_acquire() for _ in range(4)] == [True, True, True, False]


def test_gate_for_auto_is_bounded_by_max_concurrency() -> None:
    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        gate = gate_for(None, max_concurrency=8, rate=lambda: 1000.0, clock=loop.time)
        assert gate.try_acquire()
        await asyncio.sleep(1.0)  # out for a second at 1,000/s: 1,100 would be needed
        taken = 1
        while gate.try_acquire():
            taken += 1
        return taken

    assert run_virtual(scenario()) == 8


def test_littles_law_counts_how_long_a_slot_is_held_not_only_the_latency() -> None:
    """A 5 ms answer whose slot a busy client held 25 ms: the rate needs 25 ms of slots."""
    held, latency_only = AdaptiveConcurrency(), AdaptiveConcurrency()
    now = T0
    for _ in range(64):
        now += 0.002
        held.observe(0.005, now, 500, 0.0, 0.025)
        latency_only.observe(0.005, now, 500, 0.0)
    assert held.limit(500, now, None) == need(500, 0.025)
    assert latency_only.limit(500, now, None) == need(500, 0.005)
