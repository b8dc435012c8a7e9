"""Each target of the adaptive rate and in-flight limits, shown on a deterministic model of a
run against a server (traffic_sim.py, virtual time: no sleeping, no sockets), and each rule
shown to matter: with it broken, its target is missed.

Measured as a server would: answers let through per second (whole seconds), the share of
all requests answered 429, requests in flight, latency of the answers let through.
"""

from __future__ import annotations

import pytest
from traffic_sim import Outcome, Server, fixed, simulate, skewed, slowing

import audit_job.concurrency
from audit_job.limiter import PACING_MARGIN
from audit_job.limiter_tuning import RUN_TUNING

PAIRS = 6000

# The limiter's tuning before one-step convergence: cut by 10 % beyond strays, climb fast
# back to 90 % of where the server pushed back, then +0.5 % of the cap a second.
AIMD = RUN_TUNING


def lower_limit_server(latency: float, seed: int = 1) -> Server:
    """Limits at 300/s with a bucket of 30, answering 429 with Retry-After: 1."""
    return Server(fixed(latency), rate=300, burst=30, seed=seed)


# Unknown lower limit: configured 1,000/s, server 300/s.


@pytest.mark.parametrize("latency", [0.002, 0.01, 0.02])
def test_an_unknown_lower_limit_is_reached_in_one_step(latency: float) -> None:
    run = simulate(lower_limit_server(latency), PAIRS, rate=1000)
    assert run.client.answered == PAIRS
    assert run.server.accepted_rate(skip_seconds=5) >= 0.95 * 300
    assert run.server.throttled_share() <= 0.01
    assert run.server.busiest_second() <= 1000  # the cap, in every 1-second window


def test_without_the_convergence_step_the_limit_is_stormed() -> None:
    run = simulate(lower_limit_server(0.01), PAIRS, rate=1000, limiter_options=AIMD)
    assert run.server.throttled_share() > 0.05  # the 429 storm of every run


def test_cut_by_a_factor_even_with_the_new_pacing_of_steps_storms() -> None:
    """The convergence step itself, not the rest of the tuning, meets the target."""
    options = {
        "decrease_factor": 0.9,
        "decrease_interval_seconds": 0.25,
        "recovery_delay_seconds": 0.5,
        "min_throttles": 3,
        "throttle_share": 0.02,
    }
    run = simulate(lower_limit_server(0.01), PAIRS, rate=1000, limiter_options=options)
    assert run.server.throttled_share() > 0.01


# Warm start: a second run starts at the rate the first one learned.


def learned_after_a_cold_run(latency: float) -> float:
    cold = simulate(lower_limit_server(latency, seed=1), PAIRS, rate=1000)
    learned = cold.client.limiter.settled_rate
    assert learned is not None and cold.client.limiter.server_bounded
    return learned


@pytest.mark.parametrize("latency", [0.002, 0.01, 0.02])
def test_a_warm_start_is_at_the_limit_from_its_first_second(latency: float) -> None:
    learned = learned_after_a_cold_run(latency)
    warm = simulate(lower_limit_server(latency, seed=2), PAIRS, rate=1000, initial_rate=learned)
    assert warm.server.accepted_rate(skip_seconds=0) >= 0.95 * 300
    assert min(warm.server.accepted_per_second[s] for s in range(5)) >= 0.95 * 300
    assert warm.server.throttled_share() <= 0.005


def test_without_the_learned_rate_the_second_run_pays_again() -> None:
    again = simulate(lower_limit_server(0.01, seed=2), PAIRS, rate=1000)
    assert again.server.throttled_share() > 0.005


# Defaults except rate_per_second = 500: latency from 5 to 500 ms.


def littles_need(run: Outcome, rate: float = 500.0) -> float:
    mean = sum(run.server.latencies) / len(run.server.latencies)
    return rate / PACING_MARGIN * mean


@pytest.mark.parametrize("latency", [0.005, 0.05, 0.2, 0.5])
def test_full_rate_at_any_latency_with_no_more_in_flight_than_it_needs(latency: float) -> None:
    run = simulate(Server(fixed(latency)), PAIRS, rate=500)
    # After the first second, as the bench counts: at 500 ms the slow start's cap doubles
    # each round trip, 64, 128, 256, so the first second is a ramp.
    assert run.server.accepted_rate(skip_seconds=1) >= 0.95 * 500
    assert run.server.accepted_rate(skip_seconds=0) >= 0.9 * 500
    need = littles_need(run)
    assert run.gate_peak <= 1.5 * need  # holders of the gate: sending or waiting their slot
    assert run.server.peak_in_flight <= 1.5 * need


def test_a_long_tailed_latency_is_covered_by_its_high_percentile() -> None:
    """0.8 x 200 ms plus an exponential tail: p90 is 1.26x the mean, so the limit sits
    about 1.4x above the need, still under 1.5x, at full rate."""
    run = simulate(Server(skewed(0.2)), PAIRS, rate=500)
    assert run.server.accepted_rate(skip_seconds=0) >= 0.95 * 500
    assert run.gate_peak <= 1.5 * littles_need(run)


def test_a_fixed_concurrency_of_16_caps_a_slow_api() -> None:
    run = simulate(Server(fixed(0.2)), PAIRS, rate=500, concurrency=16)
    assert run.server.accepted_rate(skip_seconds=0) < 0.2 * 500  # 16 / 0.2 s = 80/s


def test_a_blind_maximum_holds_far_more_than_a_fast_api_needs() -> None:
    run = simulate(Server(fixed(0.005)), PAIRS, rate=500, concurrency=256)
    assert run.gate_peak > 1.5 * littles_need(run)


# A CPU-starved client: from 2 s to 6 s every coroutine wakes 25 ms late (a 5 ms API seen
# at 30 ms), the server no slower.


def starved(seconds: float) -> float:
    return 0.025 if 2 <= seconds < 6 else 0.0


def test_a_starved_client_keeps_its_rate() -> None:
    run = simulate(Server(fixed(0.005)), 5000, rate=500, client_delay=starved)
    # The second the host turns slow costs a little (the hold times' percentile catches up).
    assert run.server.accepted_per_second[2] >= 0.6 * 500
    assert min(run.server.accepted_per_second[s] for s in (0, 1, *range(3, 9))) >= 0.95 * 500


def test_reading_the_clients_lateness_as_a_queue_spirals_down() -> None:
    run = simulate(Server(fixed(0.005)), 5000, rate=500, client_delay=starved, discount_lag=False)
    assert min(run.server.accepted_per_second[s] for s in range(2, 6)) < 0.5 * 500


# A server with capacity for 50 in flight, 20 ms each, queueing the rest.


def capacity_server() -> Server:
    return Server(fixed(0.02), capacity=50)


def test_a_saturated_server_is_not_driven_into_congestion() -> None:
    run = simulate(capacity_server(), 20_000, rate=10_000)
    capacity = 50 / 0.02
    assert run.server.accepted_rate(skip_seconds=1) >= 0.9 * capacity
    assert run.server.median_latency() <= 2 * 0.02


def test_without_the_gradient_the_queue_grows_to_the_maximum() -> None:
    run = simulate(capacity_server(), 20_000, rate=10_000, rule_options={"gradient": False})
    assert run.server.median_latency() > 2 * 0.02  # 256 in flight: ~100 ms each


# An API that slows down for everyone: a cut that brings no relief is undone.


def test_a_slowdown_that_is_not_ours_costs_a_moment_only() -> None:
    run = simulate(Server(slowing(0.2, 2.0, at=4.0)), 8000, rate=500)
    after = [run.server.accepted_per_second[s] for s in range(7, 15)]
    assert min(after) >= 0.95 * 500


def test_without_the_verdict_every_slowdown_is_blamed_on_our_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(audit_job.concurrency, "_FELL", 0.0)  # no cut is ever "not ours"
    run = simulate(Server(slowing(0.2, 2.0, at=4.0)), 3000, rate=500)
    assert run.server.accepted_rate(skip_seconds=8) < 0.2 * 500


# Protections that stay.


def test_stray_throttles_and_occasional_system_busy_do_not_cut_the_rate() -> None:
    run = simulate(Server(fixed(0.01), busy_share=0.004), PAIRS, rate=500)
    assert min(rate for _, rate, _ in run.client.trace) == 500
    assert not run.client.limiter.server_bounded
    assert run.client.answered == PAIRS


def test_a_rate_equal_to_the_servers_limit_loses_almost_nothing() -> None:
    run = simulate(Server(fixed(0.01), window_limit=300), PAIRS, rate=300)
    assert run.server.throttled_share() <= 0.005
    assert run.server.accepted_rate(skip_seconds=0) >= 0.97 * 300
    assert run.server.busiest_second() <= 300


def test_a_server_counting_whole_seconds_costs_its_first_second_only() -> None:
    run = simulate(Server(fixed(0.01), window_limit=300), PAIRS, rate=1000)
    later = sum(run.server.throttled_per_second.get(s, 0) for s in range(1, 30))
    assert later == 0
    assert run.server.accepted_rate(skip_seconds=2) >= 0.95 * 300
