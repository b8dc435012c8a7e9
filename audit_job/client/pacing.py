"""The way out and back of one attempt: the in-flight gate, then the rate limiter; and what
each answer tells them.

Out: `try_enter()` (the hot path: no coroutine when nothing waits) or `await enter()`. The
gate comes first, so a request waiting for its rate slot already counts as in flight (the
limit is what Little's law needs: requests paced out plus those answered, concurrency.py).

Back, exactly once per entry: `answered(...)` or `no_answer()`.
- An answer that is not a throttle tells the limiter it was let through (`on_success`, the
  delivery the convergence step measures) and the gate its latency (Little's law and the
  gradient measure real service times).
- A throttle tells the limiter when its request went out (`on_throttle(sent_at)`: a throttle
  of a request sent before the last step does not count again); its latency is left out of
  the gate's measure, since a gateway's fast 429s say nothing of the API's service time and
  would make a queue seem to build when they stop.
- Rate-limit headers, when present, are the server's own budget (`on_rate_limit`); the
  limiter never paces above its cap because of them.
- No answer (timeout, reset, TLS): the slot is given back, nothing is measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from audit_job.inflight_gate import InFlightGate, gate_for
from audit_job.limiter import AdaptiveRateLimiter
from audit_job.ratelimit_headers import has_rate_limit_headers, read_rate_limit


class RequestPacing:
    __slots__ = ("_clock", "_epoch", "gate", "limiter")

    def __init__(
        self,
        limiter: AdaptiveRateLimiter,
        gate: InFlightGate,
        *,
        clock: Callable[[], float] = time.monotonic,
        epoch: Callable[[], float] = time.time,
    ) -> None:
        self.limiter = limiter
        self.gate = gate
        self._clock = clock  # the limiter's clock: send times are compared with its steps
        self._epoch = epoch  # Unix time, for an X-RateLimit-Reset given as one

    @classmethod
    def for_limits(
        cls,
        limiter: AdaptiveRateLimiter,
        concurrency: int | None,
        max_concurrency: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> RequestPacing:
        """A gate pinned to `concurrency`, or adaptive (None) up to `max_concurrency`,
        following what the limiter lets out."""
        gate = gate_for(
            concurrency,
            max_concurrency=max_concurrency,
            rate=lambda: limiter.pace,
            clock=clock,
        )
        return cls(limiter, gate, clock=clock)

    def try_enter(self) -> float | None:
        """A gate slot and a rate slot, both free now (their time); else nothing taken."""
        gate = self.gate
        if not gate.try_acquire():
            return None
        if self.limiter.try_acquire():
            return self._clock()
        gate.release()
        return None

    async def enter(self) -> float:
        """Wait for a gate slot, then for a rate slot (returns when that was due).
        Cancelled, it gives both back."""
        gate = self.gate
        await gate.acquire()
        try:
            return await self.limiter.acquire()
        except BaseException:
            gate.release()
            raise

    def now(self) -> float:
        """The send time to pass back to `answered` (the limiter's clock)."""
        return self._clock()

    def answered(
        self,
        sent_at: float,
        latency_seconds: float,
        throttled: bool,
        headers: Mapping[str, str],
        slot_at: float | None = None,
    ) -> None:
        """`slot_at`: when the rate slot was due (`enter`); from then to now is how long
        the request held its gate slot beyond any intended wait (Little's law's latency)."""
        limiter = self.limiter
        if has_rate_limit_headers(headers):
            hint = read_rate_limit(headers, self._epoch())
            if hint is not None:
                limiter.on_rate_limit(hint.remaining, hint.reset_seconds)
        if throttled:
            limiter.on_throttle(sent_at)
            self.gate.release()
        else:
            now = self._clock()
            limiter.on_success(sent_at, now)
            held = None if slot_at is None else max(latency_seconds, now - slot_at)
            self.gate.release(latency_seconds, held)

    def no_answer(self) -> None:
        self.gate.release()
