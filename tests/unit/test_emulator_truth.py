"""Pure parts of the emulator: truth, truth file, stats window, nonce book, dates, options."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_job import signing
from audit_job.emulator import EmulatorOptions, Verdict, load_truth_file, truth, verdict
from audit_job.emulator.auth import DateParser, NonceBook, TokenBook, verify_signature
from audit_job.emulator.options import updated
from audit_job.emulator.stats import Stats

ids = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(
    lambda s: not s.startswith("missing-")
)


@given(app_id=ids, user_id=ids, seed=st.integers(0, 2**32))
def test_truth_is_a_stable_boolean(app_id, user_id, seed):
    first = truth(app_id, user_id, seed)
    assert isinstance(first, bool)
    assert truth(app_id, user_id, seed) is first


def test_truth_pinned_values():
    # Pinned so that a change to the hash (which would silently move every demo) is noticed.
    got = [truth("app-1", f"user-{n}", 0) for n in range(12)]
    assert got == [True, True, True, True, False, True, True, True, False, False, True, True]


def test_truth_depends_on_seed_app_and_user():
    base = [truth("app-1", f"user-{n}", 0) for n in range(64)]
    assert base != [truth("app-1", f"user-{n}", 1) for n in range(64)]
    assert base != [truth("app-2", f"user-{n}", 0) for n in range(64)]
    # The key separates fields: ("a", "bc") and ("ab", "c") are different pairs.
    assert [truth("a", "bc", s) for s in range(32)] != [truth("ab", "c", s) for s in range(32)]


@pytest.mark.parametrize("share", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_active_share(share):
    n = 4000
    active = sum(truth("app", f"user-{i}", 5, active_share=share) for i in range(n))
    assert abs(active / n - share) < 0.03
    if share in (0.0, 1.0):
        assert active == share * n


def test_missing_prefix():
    assert truth("app-1", "missing-user-17", 0) is None
    assert verdict("app-1", "missing-user-17") is Verdict.USER_NOT_FOUND
    assert verdict("missing-app-3", "user-1") is Verdict.APP_NOT_FOUND
    assert verdict("missing-app-3", "missing-user-1") is Verdict.APP_NOT_FOUND  # app first
    assert isinstance(truth("app-1", "missing-user-17", 0, missing_prefix=""), bool)
    assert verdict("app", "gone-1", missing_prefix="gone-") is Verdict.USER_NOT_FOUND


def test_truth_file(tmp_path):
    path = tmp_path / "truth.csv"
    path.write_text(
        "app_id,user_id,active\n"
        "app-1,u1,true\n"
        "app-1,u2,0\n"
        " app-2 , 张三 , YES \n"
        "\n"
        "app-1,missing-user-1,false\n"
        "app-1,u3,user_not_found\n"
        "app-9,u1,app_not_found\n",
        encoding="utf-8",
    )
    table = load_truth_file(path)
    assert table[("app-1", "u1")] is Verdict.ACTIVE
    assert table[("app-2", "张三")] is Verdict.ACTIVE
    assert truth("app-1", "u2", 0, table=table) is False
    assert truth("app-1", "missing-user-1", 0, table=table) is False  # the file wins
    assert verdict("app-1", "u3", table=table) is Verdict.USER_NOT_FOUND
    assert verdict("app-9", "u1", table=table) is Verdict.APP_NOT_FOUND
    unlisted = truth("app-1", "u4", 3, table=table)
    assert unlisted is truth("app-1", "u4", 3)  # falls back to the hash


def test_truth_file_errors(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("app-1,u1,true\napp-1,u2,maybe\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: active: unknown value 'maybe'"):
        load_truth_file(path)
    path.write_text("app-1,u1\n")
    with pytest.raises(ValueError, match=r"bad.csv:1: expected app_id,user_id,active"):
        load_truth_file(path)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_max_per_second_window():
    clock = FakeClock()
    stats = Stats(clock)
    for t in (0.0, 0.5, 0.9, 1.0, 1.4, 3.0, 3.99, 4.0):
        clock.now = 1000.0 + t
        stats.arrive()
        stats.leave()
    # [0.5, 1.5) holds 0.5, 0.9, 1.0, 1.4; [0, 1) only three; [3, 4) two.
    assert stats.snapshot()["max_per_second"] == 4


@settings(max_examples=200)
@given(st.lists(st.integers(0, 5000), max_size=60))
def test_max_per_second_matches_brute_force(millis):
    clock = FakeClock()
    stats = Stats(clock)
    times = sorted(m / 1000 for m in millis)
    for t in times:
        clock.now = t
        stats.arrive()
    expected = max((sum(s <= t < s + 1.0 for t in times) for s in times), default=0)
    assert stats.max_per_second == expected


def test_stats_in_flight_and_reset():
    stats = Stats(FakeClock())
    stats.arrive()
    stats.arrive()
    stats.leave()
    stats.pair("a", "u")
    stats.auth_failed("bad_signature")
    snapshot = stats.snapshot()
    assert (snapshot["in_flight"], snapshot["max_in_flight"]) == (1, 2)
    assert snapshot["per_pair"] == {"a\tu": 1}
    assert snapshot["auth_failures_by_reason"] == {"bad_signature": 1}
    stats.reset()
    snapshot = stats.snapshot()
    assert (snapshot["in_flight"], snapshot["max_in_flight"], snapshot["requests_total"]) == (
        1,
        1,
        0,
    )
    stats.leave()
    assert stats.snapshot()["in_flight"] == 0


def test_nonce_book_forgets_after_expiry():
    book = NonceBook()
    assert book.add("n1", expires_at=10.0, now=0.0)
    assert not book.add("n1", expires_at=10.0, now=5.0)
    assert book.add("n2", expires_at=20.0, now=5.0)
    assert book.add("n1", expires_at=30.0, now=11.0)  # the first record expired
    assert len(book) == 2


def test_date_parser():
    parse = DateParser()
    assert parse("Wed, 25 Nov 2026 08:00:00 GMT") == 1795593600.0
    assert parse("1795593600000") == 1795593600.0
    assert parse("Wed, 25 Nov 2026 08:00:00 GMT") == 1795593600.0  # cached
    assert parse("not a date") is None
    assert parse("") is None


def _verify(headers, params, now, nonces=None, secret="sk-example"):
    return verify_signature(
        method="POST",
        path=signing.CHECK_SESSION_PATH,
        headers=headers,
        params=params,
        authorization=headers["authorization"],
        access_key_id="ak-example",
        access_key_secret=secret,
        window_seconds=900,
        now=now,
        parse_date=DateParser(),
        nonces=nonces if nonces is not None else NonceBook(),
    )


def test_verify_spec_vector_v1():
    # Spec 3, V1: the bytes authing-node-sdk 4.0.1 sends, at the vector's own time.
    headers = {
        "date": "Wed, 25 Nov 2026 08:00:00 GMT",
        "x-authing-lang": "zh-CN",
        "x-authing-sdk-version": "authing-node-sdk:4.0.1",
        "x-authing-signature-method": "HMAC-SHA1",
        "x-authing-signature-nonce": "0123456789abcdef0123456789abcdef",
        "x-authing-signature-version": "1.0",
        "authorization": "authing ak-example:h3lJM3P3ns6pX69EjUdLQpFLNXY=",
        "content-type": "application/json",
    }
    params = {"appId": "app1", "userId": "user1"}
    assert _verify(headers, params, now=1795593600.0) is None
    assert _verify(headers, params, now=1795593600.0 + 901) == "stale_date"
    assert _verify(headers, params, now=1795593600.0, secret="sk-other") == "bad_signature"
    nonces = NonceBook()
    assert _verify(headers, params, now=1795593600.0, nonces=nonces) is None
    assert _verify(headers, params, now=1795593601.0, nonces=nonces) == "nonce_reused"


def test_token_book_expiry():
    clock = FakeClock()
    book = TokenBook(clock)
    token = book.issue("pool", ttl_seconds=10)
    assert book.check(f"Bearer {token}", "pool", "pool") is None
    assert book.check(token, "pool", "pool") is None
    assert book.check(f"Bearer {token}", "other", "pool") == "userpool_mismatch"
    assert book.check(f"Bearer {token}", None, "pool") == "userpool_mismatch"
    assert book.check("Bearer x.y.z", "pool", "pool") == "unknown_token"
    clock.now += 10
    assert book.check(f"Bearer {token}", "pool", "pool") == "expired_token"


def test_token_payload_is_plain_base64_safe():
    # The Python SDK decodes the JWT payload with b64decode, which drops `-` and `_`.
    book = TokenBook()
    for _ in range(50):
        payload = book.issue("emulator-userpool", 7200).split(".")[1]
        assert "-" not in payload
        assert "_" not in payload


def test_options_validation():
    with pytest.raises(ValueError, match="error_style"):
        EmulatorOptions(error_style="teapot")
    with pytest.raises(ValueError, match="fault_5xx"):
        EmulatorOptions(fault_5xx=1.5)
    with pytest.raises(ValueError, match="sum to at most 1"):
        EmulatorOptions(fault_5xx=0.6, fault_busy=0.6)
    with pytest.raises(ValueError, match="unknown option"):
        updated(EmulatorOptions(), {"fault_teapot": 1})
    changed = updated(EmulatorOptions(), {"rate": 5.0})
    assert changed.rate == 5.0
    assert EmulatorOptions().public()["access_key_secret"] == "***"


def test_date_parser_uses_no_clock():
    # The parser is pure: a date far in the past still parses (the window check is elsewhere).
    assert DateParser()(signing.http_date(0)) == 0.0
    assert abs(DateParser()(signing.http_date(time.time())) - time.time()) < 2
