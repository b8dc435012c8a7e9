"""Retry policy for one pair: Retry-After parsing and a tenacity loop over `Answer`s (spec 7).

The retried call returns an `Answer` and never raises for wire trouble: the caller turns
exceptions into answers with `classify.classify_exception` first. So tenacity here retries on
*results* (`answer.kind.is_retryable`), stops after `max_attempts` and hands back the last
answer instead of raising `tenacity.RetryError`. Exceptions that still escape the call (bugs,
`CancelledError`) propagate unchanged and are never retried.

Waits: the answer's `retry_after_seconds` when the server sent one, else exponential backoff
with full jitter, `uniform(0, min(cap, base * 2 ** (attempt - 1)))`.
"""

from __future__ import annotations

import asyncio
import math
import random as _random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import tenacity
from tenacity.wait import wait_base

from audit_job.models import Answer

RETRY_AFTER_CAP_SECONDS = 60.0
DEFAULT_BACKOFF_BASE_SECONDS = 0.2
DEFAULT_BACKOFF_CAP_SECONDS = 10.0

# Longer values are not a delta or an IMF-fixdate; refusing them early keeps garbage cheap.
_MAX_RETRY_AFTER_CHARS = 64


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value, capped at `RETRY_AFTER_CAP_SECONDS`.

    Accepts delta-seconds (`"3"`, leniently also `"1.5"`) or an HTTP date, compared with `now`
    (aware UTC; default: the current time). Negative, past, non-finite or unparseable values
    give None, so the caller falls back to its own backoff (spec 7). Never raises.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > _MAX_RETRY_AFTER_CHARS:
        return None
    if text[0].isascii() and text[0].isdigit():
        seconds = _parse_delta(text)
        if seconds is not None:
            return min(seconds, RETRY_AFTER_CAP_SECONDS)
        # Not a delta; dates never start with a digit in IMF-fixdate, but RFC 850/asctime
        # variants can, so fall through to the date parser.
    try:
        when = parsedate_to_datetime(text)
    except Exception:  # the stdlib parser raises several types on garbage, varying by version
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    except (TypeError, OverflowError):  # a naive `now` from a careless caller
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, RETRY_AFTER_CAP_SECONDS)


def _parse_delta(text: str) -> float | None:
    whole, dot, fraction = text.partition(".")
    if not (whole.isascii() and whole.isdigit()):
        return None
    if dot and not (fraction.isascii() and fraction.isdigit()):
        return None
    seconds = float(text)
    return seconds if math.isfinite(seconds) else RETRY_AFTER_CAP_SECONDS


def backoff_seconds(
    attempt_number: int,
    *,
    base: float = DEFAULT_BACKOFF_BASE_SECONDS,
    cap: float = DEFAULT_BACKOFF_CAP_SECONDS,
    random: Callable[[], float] = _random.random,
) -> float:
    """Full-jitter backoff after attempt `attempt_number` (1 = the first attempt failed)."""
    exponent = max(0, attempt_number - 1)
    # 2.0 ** 1100 overflows; once the ceiling passes `cap` the exponent no longer matters.
    ceiling = cap if exponent >= 64 else min(cap, base * 2.0**exponent)
    return random() * ceiling


class AnswerWait(wait_base):
    """tenacity wait: the last answer's Retry-After when present, else full-jitter backoff."""

    def __init__(
        self,
        *,
        base: float = DEFAULT_BACKOFF_BASE_SECONDS,
        cap: float = DEFAULT_BACKOFF_CAP_SECONDS,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if not (base > 0 and cap >= base):
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base!r} cap={cap!r}")
        self.base = base
        self.cap = cap
        self.random = random

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        if outcome is not None and not outcome.failed:
            answer = outcome.result()
            retry_after = getattr(answer, "retry_after_seconds", None)
            if retry_after is not None and retry_after >= 0:
                # The limiter spreads the herd that wakes together, so no jitter is added.
                return min(float(retry_after), RETRY_AFTER_CAP_SECONDS)
        return backoff_seconds(
            retry_state.attempt_number, base=self.base, cap=self.cap, random=self.random
        )


def should_retry(answer: object) -> bool:
    return isinstance(answer, Answer) and answer.kind.is_retryable


def _last_answer(retry_state: tenacity.RetryCallState) -> object:
    assert retry_state.outcome is not None  # tenacity only stops after an attempt
    return retry_state.outcome.result()


def build_retrying(
    max_attempts: int,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    random: Callable[[], float] = _random.random,
    base: float = DEFAULT_BACKOFF_BASE_SECONDS,
    cap: float = DEFAULT_BACKOFF_CAP_SECONDS,
    before_sleep: Callable[[tenacity.RetryCallState], object] | None = None,
) -> tenacity.AsyncRetrying:
    """A retry loop for one pair: `answer = await build_retrying(n)(check_once, pair)`.

    Retries while the returned `Answer` is retryable (transient, throttled, auth), at most
    `max_attempts` attempts in all, then returns the last answer. Raised exceptions are not
    retried and propagate as they are.

    tenacity keeps per-call iteration state on the instance (per thread, not per task), so
    concurrent tasks must not share one instance: build one per pair or call `.copy()`.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts!r}")
    return tenacity.AsyncRetrying(
        sleep=sleep,
        stop=tenacity.stop_after_attempt(max_attempts),
        wait=AnswerWait(base=base, cap=cap, random=random),
        retry=tenacity.retry_if_result(should_retry),
        retry_error_callback=_last_answer,
        before_sleep=before_sleep,
        reraise=True,
    )
