"""A discrete-event model of a run against a server, on virtual time (virtual_loop.py).

The server: an optional token bucket (rate, burst) or sliding-window limit (at most N let
through in any second), optional random "system busy" answers, and an optional capacity
(N requests in service at once, the rest queued FIFO), each accepted request taking a drawn
service latency. The client: the real rate limiter and in-flight gate, `workers` check tasks
(as the pipeline spawns them), the client's retry behaviour (a 429 waits its Retry-After,
1 s as the emulator sends it; "system busy" waits a full-jitter backoff), at most
`max_attempts` attempts per pair. Optionally a slow client (`client_delay`): a CPU-starved
host wakes every coroutine late, so each answer reaches the client that much later and each
paced sleep of the rate limiter ends that much late. Nothing sleeps and no socket is opened;
a seed fixes a run.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from virtual_loop import run_virtual

from audit_job.concurrency import AdaptiveConcurrency
from audit_job.inflight_gate import InFlightGate
from audit_job.limiter import AdaptiveRateLimiter

OK, THROTTLED, BUSY = "ok", "throttled", "busy"


@dataclass
class Server:
    latency: Callable[[random.Random], float]  # service time of a request let through
    rate: float = 0.0  # token bucket refill per second; 0: no bucket
    burst: float = 1.0
    window_limit: int = 0  # at most this many let through in any 1 s; 0: no such limit
    capacity: int = 0  # requests in service at once (the rest wait, FIFO); 0: unlimited
    busy_share: float = 0.0  # share of requests answered "system busy" (apiCode 1000)
    throttle_seconds: float | None = None  # how long a 429 takes; None: a latency draw
    seed: int = 1
    # Measured:
    accepted_per_second: dict[int, int] = field(default_factory=dict)
    throttled_per_second: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    requests: int = 0
    throttled: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._tokens = self.burst
        self._tokens_at: float | None = None
        self._window: deque[float] = deque()
        self._free_at: list[float] = [0.0] * self.capacity  # when each service slot frees
        self.started_at: float | None = None

    async def request(self) -> str:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.started_at is None:
            self.started_at = now
        self.requests += 1
        self.arrivals.append(now)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        second = int(now - self.started_at)
        try:
            if not self._let_through(now):
                self.throttled += 1
                self.throttled_per_second[second] = self.throttled_per_second.get(second, 0) + 1
                wait = self.throttle_seconds
                await asyncio.sleep(self.latency(self._rng) if wait is None else wait)
                return THROTTLED
            self.accepted_per_second[second] = self.accepted_per_second.get(second, 0) + 1
            service = self.latency(self._rng)
            done = now + service
            if self.capacity:
                start = max(now, heapq.heappop(self._free_at))
                done = start + service
                heapq.heappush(self._free_at, done)
            await asyncio.sleep(done - now)
            self.latencies.append(done - now)
            if self.busy_share and self._rng.random() < self.busy_share:
                return BUSY
            return OK
        finally:
            self.in_flight -= 1

    def _let_through(self, now: float) -> bool:
        if self.rate:
            if self._tokens_at is not None:
                self._tokens = min(self.burst, self._tokens + (now - self._tokens_at) * self.rate)
            self._tokens_at = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
        if self.window_limit:
            window = self._window
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= self.window_limit:
                return False
            window.append(now)
        return True

    def accepted_rate(self, skip_seconds: int = 0) -> float:
        """Answers let through per second, from `skip_seconds` to the last full second."""
        last = max(self.accepted_per_second, default=0)  # the last second is partial
        seconds = range(skip_seconds, last)
        if not seconds:
            return 0.0
        return sum(self.accepted_per_second.get(s, 0) for s in seconds) / len(seconds)

    def busiest_second(self) -> int:
        """Most requests that arrived in any half-open 1-second window."""
        times = self.arrivals  # in arrival order
        best = start = 0
        for end, t in enumerate(times):
            while times[start] <= t - 1.0:
                start += 1
            best = max(best, end - start + 1)
        return best

    def throttled_share(self) -> float:
        return self.throttled / max(1, self.requests)

    def median_latency(self) -> float:
        return statistics.median(self.latencies)


@dataclass
class Client:
    limiter: AdaptiveRateLimiter
    gate: InFlightGate
    workers: int
    max_attempts: int = 5
    retry_after_seconds: float = 1.0
    delay: Callable[[], float] = lambda: 0.0  # the client's own lateness now
    seed: int = 2
    answered: int = 0
    failed: int = 0
    # (time, limiter rate, gate limit) every 100 ms
    trace: list[tuple[float, float, int]] = field(default_factory=list)

    async def run(self, server: Server, pairs: int) -> float:
        """Check `pairs` pairs; the virtual seconds it took."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        remaining = iter(range(pairs))
        rng = random.Random(self.seed)

        async def check() -> None:
            for _ in remaining:
                if await self._one_pair(server, rng):
                    self.answered += 1
                else:
                    self.failed += 1

        async def watch() -> None:
            while True:
                self.trace.append(
                    (loop.time() - started, self.limiter.current_rate, self.gate.limit)
                )
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(check() for _ in range(self.workers)))
        watcher.cancel()
        return loop.time() - started

    async def _one_pair(self, server: Server, rng: random.Random) -> bool:
        loop = asyncio.get_running_loop()
        gate, limiter = self.gate, self.limiter
        for attempt in range(1, self.max_attempts + 1):
            if not gate.try_acquire():
                await gate.acquire()
            answer, latency = THROTTLED, None
            try:
                if not limiter.try_acquire():
                    await limiter.acquire()
                sent = loop.time()
                answer = await server.request()
                late = self.delay()
                if late:
                    await asyncio.sleep(late)
                if answer == OK:
                    latency = loop.time() - sent
            finally:
                gate.release(latency)
            if answer == OK:
                limiter.on_success()
                return True
            limiter.on_throttle(sent)
            if attempt < self.max_attempts:
                if answer == THROTTLED:
                    await asyncio.sleep(self.retry_after_seconds)
                else:
                    await asyncio.sleep(rng.uniform(0, min(10.0, 0.2 * 2**attempt)))
        return False


def fixed(seconds: float, spread: float = 0.1) -> Callable[[random.Random], float]:
    """Latency uniform within +-spread of `seconds`."""
    return lambda rng: seconds * rng.uniform(1 - spread, 1 + spread)


def skewed(seconds: float) -> Callable[[random.Random], float]:
    """Latency with a long right tail: 0.8 x seconds plus an exponential of mean 0.2 x."""
    return lambda rng: seconds * (0.8 + rng.expovariate(5.0))


def adaptive_gate(
    limiter: AdaptiveRateLimiter,
    loop_clock: Callable[[], float],
    lag: Callable[[], float],
    discount_lag: bool = True,
    **rule: object,
) -> InFlightGate:
    return InFlightGate(
        rule=AdaptiveConcurrency(**rule),  # type: ignore[arg-type]
        rate=lambda: limiter.pace,
        lag=lag if discount_lag else (lambda: 0.0),
        clock=loop_clock,
    )


@dataclass
class Outcome:
    server: Server
    client: Client
    seconds: float

    @property
    def gate_peak(self) -> int:
        return self.client.gate.peak


def simulate(
    server: Server,
    pairs: int,
    *,
    rate: float,
    concurrency: int | None = None,
    workers: int = 256,
    initial_rate: float | None = None,
    limiter_options: dict[str, object] | None = None,
    rule_options: dict[str, object] | None = None,
    start: float = 1000.0,
    client_delay: Callable[[float], float] | None = None,
    discount_lag: bool = True,
) -> Outcome:
    """One run: `concurrency` pins the gate (None: adaptive, as `concurrency = "auto"`).
    `client_delay`: the client's own lateness, by virtual seconds into the run;
    `discount_lag` False: the gate is not told the lateness (loop_lag.py measures it in a
    real run; on virtual time timers are never late, so the model tells it)."""

    async def main() -> Outcome:
        clock = asyncio.get_running_loop().time

        def delay() -> float:
            return client_delay(clock() - start) if client_delay is not None else 0.0

        async def sleep(seconds: float) -> None:
            await asyncio.sleep(seconds + delay())

        if limiter_options is None:
            limiter = AdaptiveRateLimiter.converging(
                rate, initial_rate=initial_rate, clock=clock, sleep=sleep
            )
        else:
            options: dict[str, Any] = dict(limiter_options)
            limiter = AdaptiveRateLimiter(rate, clock=clock, sleep=sleep, **options)
        if concurrency is None:
            gate = adaptive_gate(limiter, clock, delay, discount_lag, **(rule_options or {}))
        else:
            gate = InFlightGate(concurrency, clock=clock)
        client = Client(limiter, gate, workers=min(workers, concurrency or workers), delay=delay)
        seconds = await client.run(server, pairs)
        return Outcome(server, client, seconds)

    return run_virtual(main(), start=start)


def slowing(
    base: float, factor: float, at: float, start: float = 1000.0
) -> Callable[[random.Random], float]:
    """Latency base +-10 %, times `factor` from `at` seconds into the run for every request
    (the API got slower for everyone, whatever the load)."""

    def draw(rng: random.Random) -> float:
        late = asyncio.get_running_loop().time() - start >= at
        return base * (factor if late else 1.0) * rng.uniform(0.9, 1.1)

    return draw
