"""Pure parts of the emulator's directory: generated users, selections, paging and filter rules,
the world's truth rules, the latency histogram, rate-limit headers, options."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_job.emulator import EmulatorOptions, Verdict, hashed_active
from audit_job.emulator.directory import STATUSES, Directory
from audit_job.emulator.filters import descending, user_filter
from audit_job.emulator.options import updated
from audit_job.emulator.paging import BadParameter, pagination, query_flag
from audit_job.emulator.selection import CHUNK, Selection
from audit_job.emulator.stats import LatencyHistogram
from audit_job.emulator.throttle import TokenBucket
from audit_job.emulator.world import World

# -- generated users ---------------------------------------------------------------------------


def test_users_are_deterministic_from_the_seed():
    first, again, other = (
        Directory(seed=1, users=50),
        Directory(seed=1, users=50),
        Directory(seed=2, users=50),
    )
    assert [first.user_dto(n) for n in range(1, 51)] == [again.user_dto(n) for n in range(1, 51)]
    assert [first.username(n) for n in range(1, 51)] != [other.username(n) for n in range(1, 51)]
    assert first.user_dto(1)["userId"] == "user-000001"


def test_user_pinned_values():
    # Pinned so that a change to the generator (which would move every demo) is noticed.
    directory = Directory(seed=0, users=3, apps=("app-1", "app-2"))
    assert [directory.names(n) for n in (1, 2, 3)] == [
        ("杨静", "jing.yang.000001"),
        ("杨强", "qiang.yang.000002"),
        ("马洋", "yang.ma.000003"),
    ]
    assert [directory.user_dto(n)["createdAt"] for n in (1, 2, 3)] == [
        "2021-01-01T00:01:33.669Z",
        "2021-01-01T00:02:20.415Z",
        "2021-01-01T00:03:13.521Z",
    ]
    assert [[a.app_id for a in directory.logged_in_apps(n)] for n in (1, 2, 3)] == [
        [],
        ["app-1", "app-2"],
        ["app-2"],
    ]


def test_status_shares_and_creation_order():
    directory = Directory(seed=3, users=20_000)
    shares = Counter(directory.status(n) for n in range(1, 20_001))
    assert set(shares) == set(STATUSES)
    expected = {
        "Activated": 0.90,
        "Suspended": 0.04,
        "Deactivated": 0.03,
        "Resigned": 0.02,
        "Archived": 0.01,
    }
    for status, share in expected.items():
        assert abs(shares[status] / 20_000 - share) < 0.01, status
    created = [directory.created_at_ms(n) for n in range(1, 2001)]
    assert all(a < b for a, b in itertools.pairwise(created))


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_login_share(share):
    directory = Directory(seed=4, users=5000, apps=("a", "b"), login_share=share)
    app = directory.app("b")
    logged = sum(directory.logged_in(n, app) for n in range(1, 5001))
    assert abs(logged / 5000 - share) < 0.03
    if share in (0.0, 1.0):
        assert logged == share * 5000


def test_app_slots_beyond_one_digest_block():
    apps = tuple(f"app-{n}" for n in range(70))
    directory = Directory(seed=1, users=400, apps=apps, login_share=0.5)
    for slot in (0, 31, 32, 69):
        app = directory.app(f"app-{slot}")
        assert app.slot == slot
        logged = [directory.logged_in(n, app) for n in range(1, 401)]
        assert 120 < sum(logged) < 280
    listed = [a.app_id for a in directory.logged_in_apps(7)]
    assert listed == [a for a in apps if directory.logged_in(7, directory.app(a))]


def test_resolve_identifiers():
    directory = Directory(seed=0, users=1_000_000)
    username = directory.username(42)
    assert directory.resolve("user-000042") == 42
    assert directory.resolve("user-1000000") == 1_000_000
    assert directory.resolve(username) == 42
    assert directory.resolve(f"{username}@example.com") == 42
    assert directory.resolve("ext-000042") == 42
    assert directory.resolve(username, "username") == 42
    assert directory.resolve("user-000042", "username") is None
    for outside in (
        "user-42",
        "user-0000042",
        "user-1000001",
        "user-000000",
        "user-",
        "x.y.000042",
        f"{username}@other.com",
        "user-００0042",
    ):
        assert directory.resolve(outside) is None, outside
    assert directory.resolve("13800000000", "phone") is None  # not modelled: outside
    assert Directory(seed=0).resolve("user-000001") is None  # no directory


def test_added_and_removed_users():
    directory = Directory(seed=0, users=3)
    assert list(directory.add_users(2)) == [4, 5]
    assert directory.resolve("user-000005") == 5
    assert directory.remove_users(["user-000002", "user-000002", "outsider"]) == [
        "user-000002",
        "outsider",
    ]
    assert not directory.exists(2) and directory.exists(3)
    assert directory.removed_sorted() == [2]
    assert directory.removed_other == {"outsider"}


# -- selections --------------------------------------------------------------------------------


def hashed_predicate(salt: int, share: float):
    return lambda index: hashed_active("p", str(index), salt, share)


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(0, 3 * CHUNK + 17),
    salt=st.integers(0, 1000),
    share=st.sampled_from([0.0, 0.05, 0.5, 1.0, None]),
    excluded_share=st.sampled_from([0.0, 0.1, 0.6]),
    offset=st.integers(0, 900),
    limit=st.integers(1, 60),
    newest_first=st.booleans(),
)
def test_selection_matches_brute_force(
    count, salt, share, excluded_share, offset, limit, newest_first
):
    predicate = None if share is None else hashed_predicate(salt, share)
    matches = [n for n in range(1, count + 1) if predicate is None or predicate(n)]
    excluded = sorted(n for n in matches if hashed_active("x", str(n), salt, excluded_share))
    kept = [n for n in matches if n not in set(excluded)]
    if newest_first:
        kept = kept[::-1]
    selection = Selection(count, predicate)
    assert selection.total(excluded) == len(kept)
    assert (
        selection.page(offset, limit, excluded, descending=newest_first)
        == kept[offset : offset + limit]
    )


def test_selection_memory_is_a_running_count_per_chunk():
    selection = Selection(1_000_000, lambda index: index % 3 == 0)
    assert selection.matched == 333_333
    assert len(selection._prefix) == math.ceil(1_000_000 / CHUNK) + 1
    assert selection.page(300_000, 3, []) == [900_003, 900_006, 900_009]


# -- paging and filters ------------------------------------------------------------------------


def test_pagination_rules():
    assert pagination(None, None) == (1, 10)
    assert pagination(3, 50) == (3, 50)
    assert pagination(2.0, 5.0) == (2, 5)
    assert pagination("4", "7", from_query=True) == (4, 7)
    cases = [
        ((0, None), "参数 page 格式错误"),
        ((None, 0), "参数 limit 格式错误"),
        ((None, 220), "limit must less than 50"),
        ((None, 51), "limit must less than 50"),
        ((True, None), "参数 page 格式错误"),
        (("1", None), "参数 page 格式错误"),
        ((None, 1.5), "参数 limit 格式错误"),
    ]
    for (page, limit), message in cases:
        with pytest.raises(BadParameter) as caught:
            pagination(page, limit)
        assert caught.value.zh == message
    with pytest.raises(BadParameter):
        pagination("-1", None, from_query=True)
    assert query_flag({"a": "True", "b": "false"}, "a") is True
    assert query_flag({"b": "false"}, "b") is False
    assert query_flag({}, "c") is None


def test_filter_rules():
    assert user_filter(None).statuses is None
    both = user_filter(
        [
            {"field": "status", "operator": "IN", "value": ["Activated", "Suspended"]},
            {"field": "status", "operator": "NOT_EQUAL", "value": "Activated"},
            {"field": "loggedInApps", "operator": "IN", "value": ["a", "b"]},
        ]
    )
    assert both.statuses == frozenset({"Suspended"})
    assert both.logged_in_to == ("a", "b")
    for bad, message in (
        ([{"field": "status", "operator": "EQUAL", "value": "invalid"}], "参数 status 格式错误"),
        ("status", "参数 advancedFilter 格式错误"),
        (
            [{"field": "loggedInApps", "operator": "IN", "value": "a"}],
            "参数 advancedFilter 格式错误",
        ),
    ):
        with pytest.raises(BadParameter) as caught:
            user_filter(bad)
        assert caught.value.zh == message
    with pytest.raises(BadParameter, match="not modelled"):
        user_filter([{"field": "email", "operator": "CONTAINS", "value": "@"}])
    assert descending([{"field": "createdAt", "order": "desc"}]) is True
    assert (
        descending([{"field": "createdAt", "order": "asc"}, {"field": "id", "order": "desc"}])
        is False
    )
    with pytest.raises(BadParameter, match="not modelled"):
        descending([{"field": "username", "order": "asc"}])


# -- the world's truth -------------------------------------------------------------------------


def make_world(tmp_path=None, **changes):
    holder = {"options": EmulatorOptions(seed=2, **changes)}
    return World(lambda: holder["options"]), holder


def test_world_rules_for_directory_and_outside_pairs(tmp_path):
    truth = tmp_path / "truth.csv"
    truth.write_text("app-1,outsider,true\napp-1,user-000001,false\n")
    world, _ = make_world(users=200, apps=("app-1", "app-2"), truth_file=str(truth))
    directory = world.directory
    app = directory.app("app-1")
    for n in range(1, 201):
        want = directory.logged_in(n, app) and hashed_active("app-1", f"user-{n:06d}", 2)
        assert world.verdict("app-1", f"user-{n:06d}") is (
            Verdict.ACTIVE if want else Verdict.INACTIVE
        )
    assert world.verdict("app-1", "outsider") is Verdict.ACTIVE  # truth file, outside
    assert world.verdict("app-1", "missing-x") is Verdict.USER_NOT_FOUND
    assert world.verdict("missing-app", "user-000001") is Verdict.APP_NOT_FOUND
    active = next(
        n for n in range(1, 201) if world.verdict("app-1", f"user-{n:06d}") is Verdict.ACTIVE
    )
    user = world.find_user(f"user-{active:06d}")
    world.kick(["app-1"], user)
    assert world.verdict("app-1", user.user_id) is Verdict.INACTIVE
    assert world.verdict("app-1", directory.username(active)) is Verdict.INACTIVE
    world.remove_apps(["app-2"])
    assert world.verdict("app-2", "user-000003") is Verdict.APP_NOT_FOUND
    assert world.verdict("app-2", "outsider") is Verdict.APP_NOT_FOUND
    world.remove_users(["user-000003"])
    assert world.verdict("app-1", "user-000003") is Verdict.USER_NOT_FOUND


def test_world_follows_directory_options():
    world, holder = make_world(users=10)
    world.remove_users(["user-000001"])
    old = holder["options"]
    holder["options"] = updated(old, {"users": 20})
    world.reconfigured(old, holder["options"])
    assert world.directory.count == 20
    assert world.directory.removed == set()  # a new shape starts afresh


# -- latency histogram, rate-limit headers, options ----------------------------------------------


@settings(max_examples=100)
@given(
    st.lists(st.floats(1e-6, 100.0), min_size=1, max_size=300), st.sampled_from([0.5, 0.9, 0.99])
)
def test_latency_quantiles_within_two_percent(samples, q):
    histogram = LatencyHistogram()
    for value in samples:
        histogram.add(value)
    exact = sorted(samples)[max(1, math.ceil(q * len(samples))) - 1]
    got = histogram.quantile(q)
    floor = 1e-5
    assert got is not None
    if exact > floor:
        assert abs(got - exact) <= 0.021 * exact
    else:
        assert got <= floor * 1.02
    assert histogram.summary_ms()["count"] == len(samples)


def test_rate_limit_headers_from_the_bucket():
    now = [100.0]
    bucket = TokenBucket(clock=lambda: now[0])
    assert bucket.limit_headers(10, 5, "ietf", 0) is not None
    assert bucket.take(10, 5) == 0.0
    # Over the next second: the 4 tokens left and 10 more refilled; a full bucket, 5 + 10.
    assert bucket.limit_headers(10, 5, "ietf", 0) == {
        "RateLimit-Limit": "15",
        "RateLimit-Remaining": "14",
        "RateLimit-Reset": "1",
    }
    for _ in range(4):
        bucket.take(10, 5)
    assert bucket.take(10, 5) > 0  # throttled, yet 10 more are due within the second
    assert bucket.limit_headers(10, 5, "ietf", 0)["RateLimit-Remaining"] == "10"
    assert bucket.limit_headers(10, 5, "x", 1_000.2) == {
        "X-RateLimit-Limit": "15",
        "X-RateLimit-Remaining": "18",  # until Unix second 1002: 1.8 s of refill
        "X-RateLimit-Reset": "1002",
    }
    now[0] += 0.25
    bucket.take(10, 5)  # 2.5 tokens back, one taken
    assert bucket.limit_headers(10, 5, "ietf", 0)["RateLimit-Remaining"] == "11"
    assert bucket.limit_headers(0, 0, "ietf", 0) is None  # no limit, nothing to tell
    assert bucket.limit_headers(10, 5, "off", 0) is None


def test_new_options_validation():
    options = EmulatorOptions(apps="a=Alpha, b")
    assert options.apps == ("a=Alpha", "b")
    assert EmulatorOptions(apps="3").apps == ("app-001=App 1", "app-002=App 2", "app-003=App 3")
    assert EmulatorOptions(apps=["x"]).apps == ("x",)
    for bad, field in (
        ({"users": -1}, "users"),
        ({"users": 1.5}, "users"),
        ({"capacity": -2}, "capacity"),
        ({"apps": "a,a"}, "apps"),
        ({"apps": "a,,b"}, "apps"),
        ({"apps": [1]}, "apps"),
        ({"login_share": 2}, "login_share"),
        ({"kick_failure_share": -0.1}, "kick_failure_share"),
        ({"kick_failure": "maybe"}, "kick_failure"),
        ({"rate_limit_headers": "y"}, "rate_limit_headers"),
        ({"users": 10**9}, "users"),
    ):
        with pytest.raises(ValueError, match=field):
            EmulatorOptions(**bad)
    assert EmulatorOptions().public()["apps"] == []
