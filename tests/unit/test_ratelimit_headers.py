"""Rate-limit headers: every format understood, garbage never trusted, never raising."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from audit_job.ratelimit_headers import (
    RateLimitHint,
    has_rate_limit_headers,
    read_rate_limit,
)

NOW = 1_764_000_000.0  # a Unix time


def hint(**headers: str) -> RateLimitHint | None:
    fields = CIMultiDict({name.replace("_", "-"): value for name, value in headers.items()})
    return read_rate_limit(fields, NOW)


def test_structured_field_of_the_current_draft() -> None:
    assert hint(RateLimit='"default";r=50;t=30') == RateLimitHint(50, 30)


def test_structured_field_with_several_policies_takes_the_tightest() -> None:
    got = hint(RateLimit='"burst";r=90;t=1, "daily";r=900;t=3600')
    assert got == RateLimitHint(900, 3600)  # 0.25/s is tighter than 90/s
    assert got.rate_per_second == pytest.approx(0.25)


def test_dictionary_field_of_draft_07() -> None:
    assert hint(RateLimit="limit=100, remaining=50, reset=30") == RateLimitHint(50, 30, 100)


def test_separate_fields_of_the_earlier_drafts() -> None:
    got = hint(RateLimit_Limit="100, 100;w=60", RateLimit_Remaining="40", RateLimit_Reset="20")
    assert got == RateLimitHint(40, 20, 100)
    assert got.rate_per_second == 2.0


def test_x_ratelimit_with_delta_seconds() -> None:
    got = hint(X_RateLimit_Limit="10", X_RateLimit_Remaining="3", X_RateLimit_Reset="1.5")
    assert got == RateLimitHint(3, 1.5, 10)


def test_x_ratelimit_reset_given_as_a_unix_time() -> None:
    got = hint(X_RateLimit_Remaining="60", X_RateLimit_Reset=str(int(NOW) + 30))
    assert got == RateLimitHint(60, 30)


def test_names_are_case_insensitive() -> None:
    assert hint(x_ratelimit_remaining="5", X_RATELIMIT_RESET="1") == RateLimitHint(5, 1)


def test_an_empty_budget_is_a_hint() -> None:
    assert hint(RateLimit_Remaining="0", RateLimit_Reset="4") == RateLimitHint(0, 4)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"RateLimit_Remaining": "10"},  # no reset
        {"RateLimit_Reset": "10"},  # no remaining
        {"RateLimit_Remaining": "-1", "RateLimit_Reset": "10"},
        {"RateLimit_Remaining": "ten", "RateLimit_Reset": "10"},
        {"RateLimit_Remaining": "10", "RateLimit_Reset": "0"},
        {"RateLimit_Remaining": "10", "RateLimit_Reset": "99999999"},  # over a day
        {"X_RateLimit_Remaining": "10", "X_RateLimit_Reset": str(int(NOW) - 5)},  # past
        {"RateLimit": '"default";q=100;w=60'},  # a policy, no current state
        {"RateLimit": "remaining=5"},
        {"RateLimit": "x" * 10_000},
    ],
)
def test_no_usable_hint(headers: dict[str, str]) -> None:
    assert hint(**headers) is None


def test_a_usable_later_format_is_used_when_an_earlier_is_garbage() -> None:
    got = hint(RateLimit="nonsense", X_RateLimit_Remaining="8", X_RateLimit_Reset="2")
    assert got == RateLimitHint(8, 2)


def test_presence_check() -> None:
    assert not has_rate_limit_headers(CIMultiDict({"Content-Type": "application/json"}))
    assert has_rate_limit_headers(CIMultiDict({"RateLimit": '"d";r=1;t=1'}))
    assert has_rate_limit_headers(CIMultiDict({"X-RateLimit-Remaining": "1"}))
    assert has_rate_limit_headers(CIMultiDict({"ratelimit-remaining": "1"}))


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "RateLimit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
                "X-RateLimit-Limit",
            ]
        ),
        st.text(max_size=80),
    )
)
def test_never_raises_and_every_hint_is_sane(headers: dict[str, str]) -> None:
    got = read_rate_limit(CIMultiDict(headers), NOW)
    if got is not None:
        assert got.remaining >= 0
        assert 0 < got.reset_seconds <= 86_400
        assert got.rate_per_second >= 0
