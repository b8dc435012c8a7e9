"""Retry-After parsing, the backoff numbers, and the tenacity loop over Answers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import tenacity
from hypothesis import given
from hypothesis import strategies as st

from audit_job.models import Answer, AnswerKind
from audit_job.retry import (
    RETRY_AFTER_CAP_SECONDS,
    AnswerWait,
    backoff_seconds,
    build_retrying,
    parse_retry_after,
)

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


# parse_retry_after


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("5", 5.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("60", 60.0),
        ("61", 60.0),
        ("3600", 60.0),
        ("9" * 64, 60.0),
        ("Wed, 25 Nov 2026 08:00:10 GMT", 10.0),
        ("Wed, 25 Nov 2026 08:00:00 GMT", 0.0),
        ("Wed, 25 Nov 2026 09:00:00 GMT", 60.0),
        ("Wed, 25 Nov 2026 10:00:20 +0200", 20.0),
        ("Wednesday, 25-Nov-26 08:00:30 GMT", 30.0),  # RFC 850, obsolete but allowed
        ("Wed Nov 25 08:00:40 2026", 40.0),  # asctime, no zone: UTC
    ],
)
def test_parse_retry_after_values(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "-1",
        "-0.5",
        "+5",
        "soon",
        "1e3",
        "NaN",
        "inf",
        "5 s",
        "1.",
        ".5",
        "٣",  # a digit, but not ASCII
        "Wed, 25 Nov 2026 07:59:59 GMT",  # in the past
        "Wed, 32 Nov 2026 08:00:00 GMT",
        "x" * 1000,
        "1" * 65,  # longer than any real value
    ],
)
def test_parse_retry_after_rejects(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_parse_retry_after_non_string_is_none() -> None:
    assert parse_retry_after(5, NOW) is None  # type: ignore[arg-type]


def test_parse_retry_after_defaults_now_to_the_clock() -> None:
    future = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    result = parse_retry_after(future)
    assert result is not None and 25 <= result <= 30


@given(st.text(max_size=80))
def test_parse_retry_after_never_raises(value: str) -> None:
    result = parse_retry_after(value, NOW)
    assert result is None or 0 <= result <= RETRY_AFTER_CAP_SECONDS


@given(st.integers(min_value=0, max_value=10**6))
def test_parse_retry_after_delta_seconds(seconds: int) -> None:
    assert parse_retry_after(str(seconds), NOW) == min(seconds, RETRY_AFTER_CAP_SECONDS)


@given(
    st.datetimes(
        min_value=datetime(1990, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.just(UTC),
    )
)
def test_parse_retry_after_http_dates(when: datetime) -> None:
    when = when.replace(microsecond=0)
    result = parse_retry_after(format_datetime(when, usegmt=True), NOW)
    delta = (when - NOW).total_seconds()
    if delta < 0:
        assert result is None
    else:
        assert result == min(delta, RETRY_AFTER_CAP_SECONDS)


# backoff_seconds: full jitter, uniform(0, min(cap, base * 2 ** (attempt - 1))).


def test_backoff_ceilings() -> None:
    top = [backoff_seconds(n, base=0.2, cap=10.0, random=lambda: 1.0) for n in range(1, 10)]
    assert top == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0])


def test_backoff_is_scaled_by_random() -> None:
    assert backoff_seconds(3, base=0.2, cap=10.0, random=lambda: 0.0) == 0.0
    assert backoff_seconds(3, base=0.2, cap=10.0, random=lambda: 0.25) == pytest.approx(0.2)


def test_backoff_huge_attempt_numbers_do_not_overflow() -> None:
    assert backoff_seconds(10_000, random=lambda: 1.0) == 10.0
    assert backoff_seconds(0, random=lambda: 1.0) == pytest.approx(0.2)


@given(st.integers(min_value=-5, max_value=5000), st.floats(min_value=0, max_value=1))
def test_backoff_stays_in_bounds(attempt: int, fraction: float) -> None:
    assert 0 <= backoff_seconds(attempt, base=0.2, cap=10.0, random=lambda: fraction) <= 10.0


# AnswerWait


def state_after(answer: object, attempt_number: int) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(tenacity.AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt_number
    state.set_result(answer)
    return state


TRANSIENT = Answer(AnswerKind.TRANSIENT, "HTTP 502 (non-JSON body)")


def throttled(retry_after: float | None) -> Answer:
    return Answer(AnswerKind.THROTTLED, "HTTP 429 throttled", retry_after_seconds=retry_after)


def test_wait_uses_backoff_without_retry_after() -> None:
    wait = AnswerWait(base=0.5, cap=4.0, random=lambda: 1.0)
    assert [wait(state_after(TRANSIENT, n)) for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 4, 4]


def test_wait_prefers_retry_after() -> None:
    wait = AnswerWait(random=lambda: 1.0)
    assert wait(state_after(throttled(3.0), 1)) == 3.0
    assert wait(state_after(throttled(0.0), 5)) == 0.0
    assert wait(state_after(throttled(120.0), 1)) == RETRY_AFTER_CAP_SECONDS
    assert wait(state_after(throttled(None), 1)) == pytest.approx(0.2)


def test_wait_on_failed_outcome_falls_back_to_backoff() -> None:
    state = tenacity.RetryCallState(tenacity.AsyncRetrying(), fn=None, args=(), kwargs={})
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        state.set_exception((RuntimeError, exc, exc.__traceback__))
    assert AnswerWait(random=lambda: 1.0)(state) == pytest.approx(0.2)


@pytest.mark.parametrize(("base", "cap"), [(0, 1), (-1, 1), (2, 1)])
def test_wait_rejects_bad_bounds(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="base"):
        AnswerWait(base=base, cap=cap)


# build_retrying


class Script:
    """An attempt function that answers from a list and records its calls."""

    def __init__(self, answers: Iterable[Answer]) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self, pair: str) -> Answer:
        assert pair == "app1/user1"
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return answer


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


ACTIVE = Answer(AnswerKind.ACTIVE, "active")
PERMANENT = Answer(AnswerKind.PERMANENT, "user not found (apiCode 2004)")
AUTH = Answer(AnswerKind.AUTH, "auth rejected: statusCode 401")
FATAL = Answer(AnswerKind.FATAL, "TLS certificate rejected")


async def test_retries_until_final_answer() -> None:
    script = Script([TRANSIENT, throttled(2.0), ACTIVE])
    sleeps = Sleeps()
    retrying = build_retrying(5, sleep=sleeps, random=lambda: 1.0)
    assert await retrying(script, "app1/user1") is ACTIVE
    assert script.calls == 3
    assert sleeps.delays == [pytest.approx(0.2), 2.0]


@pytest.mark.parametrize("answer", [ACTIVE, PERMANENT, FATAL], ids=lambda a: a.kind)
async def test_final_and_fatal_answers_are_not_retried(answer: Answer) -> None:
    script = Script([answer])
    sleeps = Sleeps()
    assert await build_retrying(5, sleep=sleeps)(script, "app1/user1") is answer
    assert script.calls == 1
    assert sleeps.delays == []


@pytest.mark.parametrize("answer", [TRANSIENT, throttled(None), AUTH], ids=lambda a: a.kind)
async def test_gives_up_after_max_attempts_with_last_answer(answer: Answer) -> None:
    script = Script([answer])
    sleeps = Sleeps()
    result = await build_retrying(4, sleep=sleeps, random=lambda: 0.5)(script, "app1/user1")
    assert result is answer  # the last answer, never tenacity.RetryError
    assert script.calls == 4
    assert sleeps.delays == pytest.approx([0.1, 0.2, 0.4])


async def test_last_answer_is_the_final_attempts() -> None:
    last = Answer(AnswerKind.TRANSIENT, "statusCode 200 without a boolean data.active")
    script = Script([TRANSIENT, TRANSIENT, last])
    assert await build_retrying(3, sleep=Sleeps())(script, "app1/user1") is last


async def test_single_attempt_never_sleeps() -> None:
    script = Script([TRANSIENT])
    sleeps = Sleeps()
    assert await build_retrying(1, sleep=sleeps)(script, "app1/user1") is TRANSIENT
    assert (script.calls, sleeps.delays) == (1, [])


async def test_exceptions_propagate_unretried() -> None:
    calls = 0

    async def broken(pair: str) -> Answer:
        nonlocal calls
        calls += 1
        raise KeyError(pair)

    with pytest.raises(KeyError):
        await build_retrying(5, sleep=Sleeps())(broken, "app1/user1")
    assert calls == 1


async def test_cancellation_propagates() -> None:
    async def cancelled(pair: str) -> Answer:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await build_retrying(5, sleep=Sleeps())(cancelled, "app1/user1")


async def test_before_sleep_sees_each_retry() -> None:
    seen: list[tuple[int, float]] = []
    script = Script([TRANSIENT, TRANSIENT, ACTIVE])
    retrying = build_retrying(
        5,
        sleep=Sleeps(),
        random=lambda: 1.0,
        before_sleep=lambda state: seen.append((state.attempt_number, state.upcoming_sleep)),
    )
    await retrying(script, "app1/user1")
    assert seen == [(1, pytest.approx(0.2)), (2, pytest.approx(0.4))]


async def test_custom_base_and_cap() -> None:
    sleeps = Sleeps()
    retrying = build_retrying(6, sleep=sleeps, random=lambda: 1.0, base=1.0, cap=3.0)
    await retrying(Script([TRANSIENT]), "app1/user1")
    assert sleeps.delays == [1.0, 2.0, 3.0, 3.0, 3.0]


async def test_copies_run_concurrently_without_interference() -> None:
    shared = build_retrying(3, sleep=lambda _: asyncio.sleep(0), random=lambda: 0.0)
    scripts = [Script([TRANSIENT] * (i % 3) + [ACTIVE]) for i in range(30)]
    results = await asyncio.gather(*(shared.copy()(s, "app1/user1") for s in scripts))
    assert all(result is ACTIVE for result in results)
    assert [s.calls for s in scripts] == [i % 3 + 1 for i in range(30)]


@pytest.mark.parametrize("attempts", [0, -1])
def test_max_attempts_must_be_positive(attempts: int) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        build_retrying(attempts)
