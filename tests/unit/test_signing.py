"""Signature mode, spec sections 2 and 3: the test vectors byte for byte, and the client's
fast path agreeing with the general rule for any ids."""

from __future__ import annotations

import json
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit_job import signing

DATE = "Wed, 25 Nov 2026 08:00:00 GMT"
NONCE = "0123456789abcdef0123456789abcdef"
EPOCH = parsedate_to_datetime(DATE).timestamp()


def headers(sdk_version: str, lang: str = "zh-CN") -> dict[str, str]:
    return {
        "date": DATE,
        "x-authing-lang": lang,
        "x-authing-sdk-version": sdk_version,
        "x-authing-signature-method": "HMAC-SHA1",
        "x-authing-signature-nonce": NONCE,
        "x-authing-signature-version": "1.0",
    }


def lines(*parts: str) -> str:
    return "\n".join(parts)


VECTORS = {
    "V1 node sdk": (
        "POST",
        signing.CHECK_SESSION_PATH,
        headers("authing-node-sdk:4.0.1"),
        {"appId": "app1", "userId": "user1"},
        lines(
            "POST",
            f"date:{DATE}",
            "x-authing-lang:zh-CN",
            "x-authing-sdk-version:authing-node-sdk:4.0.1",
            "x-authing-signature-method:HMAC-SHA1",
            f"x-authing-signature-nonce:{NONCE}",
            "x-authing-signature-version:1.0",
            "/api/v3/check-session-status?appId=app1&userId=user1",
        ),
        "authing ak-example:h3lJM3P3ns6pX69EjUdLQpFLNXY=",
    ),
    "V2 audit-job": (
        "POST",
        signing.CHECK_SESSION_PATH,
        headers("audit-job:0.1.0"),
        {"appId": "app1", "userId": "user1"},
        lines(
            "POST",
            f"date:{DATE}",
            "x-authing-lang:zh-CN",
            "x-authing-sdk-version:audit-job:0.1.0",
            "x-authing-signature-method:HMAC-SHA1",
            f"x-authing-signature-nonce:{NONCE}",
            "x-authing-signature-version:1.0",
            "/api/v3/check-session-status?appId=app1&userId=user1",
        ),
        "authing ak-example:i/k7lfhm2yImSYwNhZnkCMeJ6z4=",
    ),
    "V3 raw utf-8": (
        "POST",
        signing.CHECK_SESSION_PATH,
        headers("audit-job:0.1.0", "en-US"),
        {"appId": "6229ffaxxxxxxxxcade3e3d9", "userId": "张三+a b@example.com"},
        lines(
            "POST",
            f"date:{DATE}",
            "x-authing-lang:en-US",
            "x-authing-sdk-version:audit-job:0.1.0",
            "x-authing-signature-method:HMAC-SHA1",
            f"x-authing-signature-nonce:{NONCE}",
            "x-authing-signature-version:1.0",
            "/api/v3/check-session-status?appId=6229ffaxxxxxxxxcade3e3d9"
            "&userId=张三+a b@example.com",
        ),
        "authing ak-example:6gvtOgCV84GmSq2431D6hgY/ziI=",
    ),
    "V4 serialisation": (
        "GET",
        "/api/v3/example",
        headers("audit-job:0.1.0"),
        {
            "z": "last",
            "options": {"pagination": {"page": 1, "limit": 10}},
            "n": 5,
            "b": False,
            "e": "",
            "arr": ["x", "y"],
        },
        lines(
            "GET",
            f"date:{DATE}",
            "x-authing-lang:zh-CN",
            "x-authing-sdk-version:audit-job:0.1.0",
            "x-authing-signature-method:HMAC-SHA1",
            f"x-authing-signature-nonce:{NONCE}",
            "x-authing-signature-version:1.0",
            '/api/v3/example?arr=["x","y"]&b=false&e=&n=5'
            '&options={"pagination":{"page":1,"limit":10}}&z=last',
        ),
        "authing ak-example:CDEKM+hmJVtcs8rbRYO1DiuAZn8=",
    ),
}


@pytest.mark.parametrize("name", list(VECTORS))
def test_vectors_byte_for_byte(name: str) -> None:
    method, path, hdrs, params, expected, auth = VECTORS[name]
    message = signing.string_to_sign(method, path, hdrs, params)
    assert message.encode() == expected.encode()
    assert signing.authorization("ak-example", "sk-example", message) == auth


@pytest.mark.parametrize("name", ["V2 audit-job", "V3 raw utf-8"])
def test_the_fast_path_sends_the_vector(name: str) -> None:
    _, _, hdrs, params, _, auth = VECTORS[name]
    signer = signing.Signer(
        "ak-example",
        "sk-example",
        lang=hdrs["x-authing-lang"],
        sdk_version=hdrs["x-authing-sdk-version"],
        clock=lambda: EPOCH,
        nonce=lambda: NONCE,
    )
    sent = signer.headers_for_check(params["appId"], params["userId"])
    assert sent["authorization"] == auth
    assert {k: sent[k] for k in hdrs} == hdrs  # every signed header is sent as signed
    assert sent["content-type"] == "application/json"


def test_extra_canonicalisation_checks() -> None:
    assert signing.string_to_sign("POST", "/p", {}, {}) == "POST\n/p"
    assert signing.canonical_headers({"X-Authing-Lang": "  zh-CN\t"}) == "x-authing-lang:zh-CN\n"
    unsigned = {"content-type": "application/json", "authorization": "x", "host": "h"}
    assert signing.canonical_headers(unsigned) == ""
    assert signing.canonical_value(1.5) == "1.5"
    assert signing.canonical_value(5.0) == "5"
    assert signing.canonical_value(None) == "null"


def test_check_body_is_compact_raw_utf8_with_exactly_two_keys() -> None:
    body = signing.check_body("app1", "user1")
    assert body == b'{"appId":"app1","userId":"user1"}' and len(body) == 33
    assert json.loads(signing.check_body("a", "张三")) == {"appId": "a", "userId": "张三"}
    assert "张三".encode() in signing.check_body("a", "张三")


ids = st.text(min_size=1, max_size=60).filter(lambda s: "\x00" not in s)


@given(app_id=st.text(max_size=40), user_id=st.text(max_size=40))
def test_check_body_is_what_json_dumps_makes(app_id: str, user_id: str) -> None:
    # The body skips json.dumps for plain ids; it must be byte for byte what dumps makes.
    if any("\ud800" <= ch <= "\udfff" for ch in app_id + user_id):
        with pytest.raises(UnicodeEncodeError):  # a lone surrogate has no UTF-8 form
            signing.check_body(app_id, user_id)
        return
    expected = json.dumps(
        {"appId": app_id, "userId": user_id}, separators=(",", ":"), ensure_ascii=False
    ).encode()
    assert signing.check_body(app_id, user_id) == expected


@given(app_id=ids, user_id=ids, second=st.integers(0, 4_000_000_000))
def test_fast_path_equals_the_general_rule(app_id: str, user_id: str, second: int) -> None:
    signer = signing.Signer(
        "ak", "sk", sdk_version="audit-job:0.1.0", clock=lambda: second, nonce=lambda: NONCE
    )
    sent = signer.headers_for_check(app_id, user_id)
    message = signing.string_to_sign(
        "POST", signing.CHECK_SESSION_PATH, sent, json.loads(signing.check_body(app_id, user_id))
    )
    assert sent["authorization"] == signing.authorization("ak", "sk", message)
    assert sent["date"] == signing.http_date(second)


def test_nonce_pool_gives_fresh_lowercase_hex() -> None:
    pool = signing.NoncePool(chunk_bytes=64)  # refills every two nonces
    nonces = [pool() for _ in range(1000)]
    assert len(set(nonces)) == 1000
    assert all(len(n) == 32 and set(n) <= set("0123456789abcdef") for n in nonces)
