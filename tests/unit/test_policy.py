"""Expected states: policy matching and the specificity rule (audit_job/policy.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit_job.config import PolicySettings
from audit_job.policy import (
    DEFAULT,
    EXPECT_PROBLEM,
    Effective,
    PolicySet,
    contradicts,
    literal_count,
    parse_expect,
)


def policy(**values: object) -> PolicySettings:
    return PolicySettings.model_validate(values)


def test_no_policy_and_no_own_expectation_is_any() -> None:
    assert (
        PolicySet().effective("payroll", "alice")
        == DEFAULT
        == Effective("any", "warning", "default")
    )


def test_globs_and_lists_match_apps_and_users() -> None:
    rules = PolicySet(
        [
            policy(
                name="offboarded", apps=["payroll", "hr-*"], users="contractor-*", expect="inactive"
            )
        ]
    )
    assert rules.effective("payroll", "contractor-7").expect == "inactive"
    assert rules.effective("hr-portal", "contractor-7").source == "policy offboarded"
    assert rules.effective("payroll", "alice") == DEFAULT
    assert rules.effective("crm", "contractor-7") == DEFAULT
    # globs are case-sensitive and anchored at both ends
    assert rules.effective("HR-portal", "contractor-7") == DEFAULT
    assert rules.effective("payroll", "x-contractor-7") == DEFAULT


def test_a_missing_key_matches_everything() -> None:
    rules = PolicySet([policy(users="svc-?", expect="active", severity="critical")])
    assert rules.effective("any-app", "svc-1") == Effective("active", "critical", "policy #1")
    assert rules.effective("any-app", "svc-12") == DEFAULT  # ? is exactly one character


def test_a_pairs_own_expectation_beats_every_policy() -> None:
    rules = PolicySet(
        [policy(apps="payroll", users="alice", expect="inactive", severity="critical")]
    )
    assert rules.effective("payroll", "alice", "active") == Effective("active", "warning", "target")
    assert rules.effective("payroll", "alice", "active", own_source="source").source == "source"
    # its own `any` is no expectation: the policy applies
    assert rules.effective("payroll", "alice", "any").expect == "inactive"
    assert rules.effective("payroll", "alice", None).expect == "inactive"


def test_exact_names_beat_globs_whatever_their_length() -> None:
    rules = PolicySet(
        [
            policy(name="long glob", users="contractor-00*", expect="inactive"),
            policy(name="exact app", apps="hr", expect="active"),
        ]
    )
    # the exact app name counts one exact dimension; the glob none, however literal
    assert rules.effective("hr", "contractor-001").source == "policy exact app"
    # where only the glob matches, it applies
    assert rules.effective("crm", "contractor-001").source == "policy long glob"


def test_more_exact_dimensions_win() -> None:
    rules = PolicySet(
        [
            policy(name="app", apps="payroll", expect="inactive"),
            policy(name="pair", apps="payroll", users="alice", expect="active"),
            policy(name="user", users="alice", expect="any"),
        ]
    )
    assert rules.effective("payroll", "alice").source == "policy pair"
    assert rules.effective("payroll", "bob").source == "policy app"
    assert rules.effective("crm", "alice").source == "policy user"


def test_among_globs_more_literal_characters_win() -> None:
    rules = PolicySet(
        [
            policy(name="broad", users="c*", expect="inactive"),
            policy(name="narrow", users="contractor-*", expect="active"),
            policy(name="sets", users="con[tx]ractor-[0-9]*", expect="any"),
        ]
    )
    # literals: c* 1, contractor-* 11, con[tx]ractor-[0-9]* 10
    assert rules.effective("app", "contractor-1").source == "policy narrow"
    assert rules.effective("app", "conxractor-1").source == "policy sets"
    assert rules.effective("app", "cat").source == "policy broad"


def test_literal_characters_add_up_over_app_and_user() -> None:
    rules = PolicySet(
        [
            policy(name="user only", users="svc-batch-*", expect="inactive"),  # 10
            policy(name="both", apps="hr-*", users="svc-*", expect="active"),  # 3 + 4 = 7
            policy(name="both longer", apps="hr-port*", users="svc-*", expect="any"),  # 11
        ]
    )
    assert rules.effective("hr-x", "svc-batch-1").source == "policy user only"
    assert rules.effective("hr-portal", "svc-batch-1").source == "policy both longer"


def test_the_best_matching_pattern_of_a_list_counts() -> None:
    rules = PolicySet(
        [
            policy(name="list", users=["*", "contractor-17"], expect="inactive"),
            policy(name="glob", users="contractor-1*", expect="active"),
        ]
    )
    assert rules.effective("a", "contractor-17").source == "policy list"  # exact in its list
    assert rules.effective("a", "contractor-18").source == "policy glob"  # 12 literals > 0


def test_ties_go_to_the_first_block_in_the_file() -> None:
    rules = PolicySet(
        [
            policy(name="first", apps="a*", expect="inactive"),
            policy(name="second", users="b*", expect="active"),
        ]
    )
    assert rules.effective("a1", "b1").source == "policy first"
    swapped = PolicySet(
        [
            policy(name="second", users="b*", expect="active"),
            policy(name="first", apps="a*", expect="inactive"),
        ]
    )
    assert swapped.effective("a1", "b1").source == "policy second"


def test_an_any_policy_exempts_pairs_from_a_broader_one() -> None:
    rules = PolicySet(
        [
            policy(name="everyone out", apps="payroll", expect="inactive", severity="critical"),
            policy(name="payroll admins", apps="payroll", users="admin-*", expect="any"),
        ]
    )
    assert rules.effective("payroll", "admin-1").expect == "any"
    assert rules.effective("payroll", "bob") == Effective(
        "inactive", "critical", "policy everyone out"
    )


def test_the_per_app_cache_gives_the_same_answers() -> None:
    rules = PolicySet([policy(apps="a*", users="u1", expect="active")])
    first = [rules.effective("app", f"u{i}") for i in range(3)]
    again = [rules.effective("app", f"u{i}") for i in range(3)]
    assert first == again and first[1].expect == "active" and first[0] == DEFAULT


@pytest.mark.parametrize(
    ("pattern", "literals"),
    [
        ("payroll", 7),
        ("hr-*", 3),
        ("svc-??", 4),
        ("[abc]x", 1),
        ("[!a]x", 1),
        ("[]]x", 1),  # fnmatch: a ] right after [ belongs to the set
        ("x[", 2),  # an unclosed [ is a literal
        ("*", 0),
    ],
)
def test_literal_count(pattern: str, literals: int) -> None:
    assert literal_count(pattern) == literals


@given(st.sampled_from(["any", "active", "inactive"]), st.booleans())
def test_contradiction_is_only_the_opposite_state(expect: str, active: bool) -> None:
    assert contradicts(expect, active) == (
        (expect == "active" and not active) or (expect == "inactive" and active)
    )


def test_parse_expect_cells() -> None:
    assert parse_expect(" Inactive ") == "inactive"
    assert parse_expect("") is None and parse_expect(None) is None
    for bad in ("yes", "inactve", 1):
        with pytest.raises(ValueError, match=EXPECT_PROBLEM):
            parse_expect(bad)
