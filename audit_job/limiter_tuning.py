"""The rate limiter's tuning (limiter.py): its settings checked, and the AIMD climb.

Adaptation (AIMD): `on_throttle()` multiplies the current rate by `decrease_factor` (0.7), at
most once per `decrease_interval_seconds` (1 s) so a volley of simultaneous 429s counts once,
never below `min_rate`. From `recovery_delay_seconds` (1 s) after the last decrease the rate
climbs linearly by `recovery_fraction` (5 %) of the cap per second back to the cap: from 0.7
of the cap, about 7 s. Recovery is a function of time, read lazily; no task runs for it.

Stray throttles (optional, `min_throttles`, `throttle_share`): a client paced right at the
server's limit sees an occasional 429 from timing jitter, and a busy server an occasional
"system busy"; cutting the rate for each costs far more than the one retried request. The
rate is cut only when, within one second, at least max(min_throttles, share x rate)
throttles arrived (each retried request still honours its own Retry-After).

Remembered ceiling (optional, `fast_recovery_fraction`): the rate at the last throttle is
where the server pushed back. Below `fast_recovery_until` (97 %) of it the rate climbs at the
fast fraction, then probes on at the slow one. A client sharing a quota, or set exactly at the
server's limit, then spends little time far below the limit after each 429, instead of
crawling back from 70 % every time; the slow probe still finds a limit that was raised.
"""

from __future__ import annotations

import math
from typing import Any

from audit_job.convergence import WINDOW_SECONDS

# The AIMD tuning (measured with benchmarks/run.py against a server limiting at the
# configured rate, and at half of it): cut by 10 % only when throttles are more than stray
# (3, and 2 % of the rate, within a second), climb back fast to 90 % of the rate where the
# server pushed back, then probe upwards slowly (+0.5 % of the cap per second), so the rate
# settles just under an unknown limit instead of storming it every few seconds.
RUN_TUNING: dict[str, Any] = {
    "decrease_factor": 0.9,
    "recovery_delay_seconds": 0.5,
    "recovery_fraction": 0.005,
    "fast_recovery_fraction": 0.25,
    "fast_recovery_until": 0.9,
    "min_throttles": 3,
    "throttle_share": 0.02,
}

# One-step convergence: step only beyond strays (3, and 2 % of the rate, within a second), to
# sending 98 % of what the server let through (10 % down while too few answers tell), again
# after 50 ms at the soonest (throttles of requests sent before a step never count); probe
# upwards at 1 % of that per second after 0.5 s, or after 30 s when a precise step shows the
# server bounds the rate (tests/unit/test_adaptive_simulation.py shows the targets).
CONVERGING_TUNING: dict[str, Any] = {
    "decrease_factor": 0.9,
    "decrease_interval_seconds": 0.05,
    "recovery_delay_seconds": 0.5,
    "min_throttles": 3,
    "throttle_share": 0.02,
    "settle_fraction": 0.98,
    "probe_fraction": 0.01,
    "probe_after_seconds": 30.0,
}


def check_settings(
    *,
    rate_per_second: float,
    min_rate: float,
    burst: int,
    decrease_factor: float,
    decrease_interval_seconds: float,
    recovery_delay_seconds: float,
    recovery_fraction: float,
    fast_recovery_fraction: float | None,
    fast_recovery_until: float,
    min_throttles: int,
    throttle_share: float,
    settle_fraction: float | None,
    probe_fraction: float,
    probe_after_seconds: float,
    initial_rate: float | None,
) -> None:
    """ValueError naming the first setting out of its range."""
    check_rate("rate_per_second", rate_per_second)
    check_rate("min_rate", min_rate)
    if burst < 1:
        raise ValueError(f"burst must be >= 1, got {burst!r}")
    if not 0 < decrease_factor < 1:
        raise ValueError(f"decrease_factor must be in (0, 1), got {decrease_factor!r}")
    if not (recovery_fraction > 0 and math.isfinite(recovery_fraction)):
        raise ValueError(f"recovery_fraction must be > 0, got {recovery_fraction!r}")
    if fast_recovery_fraction is not None and not (
        fast_recovery_fraction > 0 and math.isfinite(fast_recovery_fraction)
    ):
        raise ValueError(f"fast_recovery_fraction must be > 0, got {fast_recovery_fraction!r}")
    if not 0 < fast_recovery_until <= 1:
        raise ValueError(f"fast_recovery_until must be in (0, 1], got {fast_recovery_until!r}")
    if min_throttles < 1:
        raise ValueError(f"min_throttles must be >= 1, got {min_throttles!r}")
    if not 0 <= throttle_share < 1:
        raise ValueError(f"throttle_share must be in [0, 1), got {throttle_share!r}")
    if decrease_interval_seconds < 0 or recovery_delay_seconds < 0:
        raise ValueError("decrease_interval_seconds and recovery_delay_seconds must be >= 0")
    if settle_fraction is not None and not 0 < settle_fraction < 1:
        raise ValueError(f"settle_fraction must be in (0, 1), got {settle_fraction!r}")
    if not (probe_fraction > 0 and math.isfinite(probe_fraction)):
        raise ValueError(f"probe_fraction must be > 0, got {probe_fraction!r}")
    if not (probe_after_seconds >= 0 and math.isfinite(probe_after_seconds)):
        raise ValueError(f"probe_after_seconds must be >= 0, got {probe_after_seconds!r}")
    if initial_rate is not None:
        check_rate("initial_rate", initial_rate)
        if settle_fraction is None:
            raise ValueError("initial_rate needs settle_fraction (a warm start converges)")


def aimd_climb(
    rate: float,
    cap: float,
    elapsed: float,
    *,
    ceiling: float,
    fast_fraction: float | None,
    fast_until: float,
    slow_fraction: float,
) -> float:
    """The rate `elapsed` seconds of climbing after `rate`: fast (`fast_fraction` of the cap
    a second) up to `fast_until` of the ceiling, then slow, never above the cap."""
    if fast_fraction is not None:
        knee = min(cap, ceiling * fast_until)
        if rate < knee:
            step = cap * fast_fraction
            needed = (knee - rate) / step
            rate = knee if elapsed > needed else rate + step * elapsed
            elapsed = max(0.0, elapsed - needed)
    return min(cap, rate + cap * slow_fraction * elapsed)


# No process sends this many requests a second; a guard that long only costs memory (a
# rate set to 1,000,000 "for no limit" would keep a million timestamps).
GUARD_MAX_QUOTA = 65_536


def window_quota(cap: float) -> int:
    # The slack lets a cap computed as 19.9999999999 (e.g. a budget split across processes)
    # count as the 20 it was meant to be.
    return min(GUARD_MAX_QUOTA, max(1, math.floor(cap * WINDOW_SECONDS + 1e-9)))


def check_rate(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
