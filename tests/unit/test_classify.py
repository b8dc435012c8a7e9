"""classify_response / classify_exception against the spec's section-6 table, row by row."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from datetime import UTC, datetime
from typing import Any, NamedTuple

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from audit_job.classify import (
    MESSAGE_MAX_CHARS,
    REQUEST_ID_MAX_CHARS,
    classify_exception,
    classify_response,
    loads,
)
from audit_job.models import Answer, AnswerKind

ACTIVE = AnswerKind.ACTIVE
INACTIVE = AnswerKind.INACTIVE
TRANSIENT = AnswerKind.TRANSIENT
THROTTLED = AnswerKind.THROTTLED
AUTH = AnswerKind.AUTH
PERMANENT = AnswerKind.PERMANENT
FATAL = AnswerKind.FATAL

PROXY_HTML = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


def envelope(**fields: Any) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode()


def ok(active: Any, **extra: Any) -> bytes:
    return envelope(statusCode=200, message="", requestId="req-1", data={"active": active}, **extra)


class Case(NamedTuple):
    http_status: int
    body: bytes
    kind: AnswerKind
    detail: str | None = None  # expected substring of Answer.detail
    headers: dict[str, str] = {}  # noqa: RUF012 (never mutated)


# One or more cases per row of the table in spec section 6; rows 1-2 are exceptions, below.
RESPONSE_CASES = {
    # Row 3: throttled in either layer; beats everything after it.
    "r3-http-429-empty": Case(429, b"", THROTTLED, "HTTP 429"),
    "r3-http-429-html": Case(429, b"<html>Too Many Requests</html>", THROTTLED),
    "r3-http-429-beats-active": Case(429, ok(True), THROTTLED),
    "r3-http-429-beats-auth": Case(429, envelope(statusCode=401), THROTTLED),
    "r3-envelope-429": Case(200, envelope(statusCode=429, message="slow down"), THROTTLED),
    "r3-envelope-429-string": Case(200, envelope(statusCode="429"), THROTTLED, "statusCode 429"),
    # Row 4: apiCode 1000 (system busy), any statusCode; counted as a throttle (spec 7).
    "r4-api-1000-sc-500": Case(200, envelope(statusCode=500, apiCode=1000), THROTTLED),
    "r4-api-1000-string": Case(200, envelope(statusCode=400, apiCode="1000"), THROTTLED),
    "r4-api-1000-beats-active": Case(200, ok(True, apiCode=1000), THROTTLED),
    "r4-api-1000-beats-http-401": Case(401, envelope(statusCode=401, apiCode=1000), THROTTLED),
    "r4-api-1000-detail": Case(200, envelope(apiCode=1000), THROTTLED, "apiCode 1000 system busy"),
    # Row 5: credentials rejected, HTTP or envelope style, or by apiCode.
    "r5-http-401-html": Case(401, b"<html>401 Authorization Required</html>", AUTH, "HTTP 401"),
    "r5-http-403-json": Case(403, envelope(statusCode=403, message="forbidden"), AUTH),
    "r5-http-401-beats-500-row": Case(401, b"", AUTH),
    "r5-envelope-401": Case(200, envelope(statusCode=401, message="签名错误"), AUTH),
    "r5-envelope-403-string": Case(200, envelope(statusCode="403"), AUTH, "statusCode 403"),
    "r5-api-1001": Case(200, envelope(statusCode=400, apiCode=1001), AUTH, "apiCode 1001"),
    "r5-api-2020": Case(200, envelope(statusCode=400, apiCode=2020), AUTH),
    "r5-api-2224-string": Case(200, envelope(statusCode=499, apiCode="2224"), AUTH),
    "r5-api-2020-beats-active": Case(200, ok(True, apiCode=2020), AUTH),
    "r5-envelope-401-beats-http-502": Case(502, envelope(statusCode=401), AUTH),
    # Row 6: HTTP 408 or >= 500, whatever the body says.
    "r6-http-502-html": Case(502, PROXY_HTML, TRANSIENT, "HTTP 502 (non-JSON body)"),
    "r6-http-503-empty": Case(503, b"", TRANSIENT, "HTTP 503 (empty body)"),
    "r6-http-504-json-array": Case(504, b"[1,2]", TRANSIENT),
    "r6-http-408": Case(408, b"", TRANSIENT, "HTTP 408"),
    "r6-http-500-beats-active": Case(500, ok(True), TRANSIENT, "statusCode 200"),
    "r6-http-500-beats-permanent": Case(
        500, envelope(statusCode=404, apiCode=2004), TRANSIENT, "HTTP 500"
    ),
    "r6-http-599": Case(599, b"", TRANSIENT),
    # Row 7: no JSON object with a usable statusCode.
    "r7-http-301-html": Case(301, b"<html>Moved</html>", AUTH, "wrong host, scheme or path"),
    "r7-http-302-empty": Case(302, b"", AUTH),
    "r7-http-308": Case(308, b"", AUTH),
    "r7-http-404-html": Case(404, b"<html>Not Found</html>", AUTH, "HTTP 404 (non-JSON body)"),
    "r7-http-404-json-no-status": Case(404, b'{"error":"not found"}', AUTH),
    "r7-http-400-html": Case(400, b"<html>Bad Request</html>", PERMANENT, "HTTP 400"),
    "r7-http-405-empty": Case(405, b"", PERMANENT),
    "r7-http-413-json-array": Case(413, b"[]", PERMANENT),
    "r7-http-200-html": Case(200, PROXY_HTML, TRANSIENT, "malformed"),
    "r7-http-200-empty": Case(200, b"", TRANSIENT, "empty body"),
    "r7-http-204-empty": Case(204, b"", TRANSIENT),
    "r7-http-200-array": Case(200, b"[]", TRANSIENT, "not an object"),
    "r7-http-200-null": Case(200, b"null", TRANSIENT),
    "r7-http-200-truncated": Case(200, b'{"statusCode":200,"data":{"act', TRANSIENT),
    "r7-http-200-not-utf8": Case(200, b'{"statusCode":200,"message":"\xff\xfe"}', TRANSIENT),
    "r7-status-missing": Case(200, envelope(data={"active": True}), TRANSIENT, "usable"),
    "r7-status-bool": Case(200, envelope(statusCode=True, data={"active": True}), TRANSIENT),
    "r7-status-float": Case(200, envelope(statusCode=200.0, data={"active": True}), TRANSIENT),
    "r7-status-word": Case(200, envelope(statusCode="OK", data={"active": True}), TRANSIENT),
    "r7-status-object": Case(200, envelope(statusCode={"v": 200}), TRANSIENT),
    "r7-status-huge": Case(200, envelope(statusCode=2**40), TRANSIENT),
    "r7-status-null-404": Case(404, envelope(statusCode=None), AUTH),
    # Row 8: statusCode 200 and a JSON boolean data.active.
    "r8-active": Case(200, ok(True), ACTIVE, "active"),
    "r8-inactive": Case(200, ok(False), INACTIVE, "inactive"),
    "r8-status-string": Case(200, envelope(statusCode="200", data={"active": True}), ACTIVE),
    "r8-status-padded-string": Case(
        200, envelope(statusCode=" 200 ", data={"active": False}), INACTIVE
    ),
    "r8-success-with-apicode": Case(200, ok(True, apiCode=20001), ACTIVE),
    "r8-minimal": Case(200, b'{"statusCode":200,"data":{"active":false}}', INACTIVE),
    # The table trusts a valid envelope over a non-2xx HTTP status outside rows 3, 5, 6.
    "r8-envelope-over-http-404": Case(404, ok(True), ACTIVE),
    # Row 9: statusCode 200 without a boolean data.active.
    "r9-active-1": Case(200, ok(1), TRANSIENT, "boolean data.active"),
    "r9-active-0": Case(200, ok(0), TRANSIENT),
    "r9-active-string": Case(200, ok("true"), TRANSIENT),
    "r9-active-null": Case(200, ok(None), TRANSIENT),
    "r9-active-missing": Case(200, envelope(statusCode=200, data={}), TRANSIENT),
    "r9-data-null": Case(200, envelope(statusCode=200, data=None), TRANSIENT),
    "r9-data-list": Case(200, envelope(statusCode=200, data=[{"active": True}]), TRANSIENT),
    "r9-data-missing": Case(200, envelope(statusCode=200), TRANSIENT),
    "r9-permanent-apicode-ignored": Case(200, ok(None, apiCode=2004), TRANSIENT),
    # Row 10: envelope statusCode >= 500.
    "r10-envelope-500": Case(200, envelope(statusCode=500, message="参数错误"), TRANSIENT),
    "r10-envelope-503-string": Case(200, envelope(statusCode="503"), TRANSIENT, "server error"),
    "r10-envelope-500-with-apicode": Case(
        200, envelope(statusCode=500, apiCode=1234567), TRANSIENT
    ),
    # Row 11: a business error for this pair.
    "r11-user-not-found": Case(
        200,
        envelope(statusCode=404, apiCode=2004, message="用户不存在"),
        PERMANENT,
        "user not found (apiCode 2004)",
    ),
    "r11-user-not-found-http-404": Case(404, envelope(statusCode=404, apiCode=2004), PERMANENT),
    "r11-app-not-found-legacy": Case(
        200, envelope(statusCode=499, apiCode="2011"), PERMANENT, "app not found (apiCode 2011)"
    ),
    "r11-app-not-found-http-400": Case(400, envelope(statusCode=400, apiCode=2011), PERMANENT),
    "r11-400": Case(200, envelope(statusCode=400, message="invalid"), PERMANENT, "statusCode 400"),
    "r11-404-no-apicode": Case(200, envelope(statusCode=404), PERMANENT),
    "r11-409": Case(200, envelope(statusCode=409), PERMANENT),
    "r11-499": Case(200, envelope(statusCode=499), PERMANENT),
    # Row 10 says ">= 500" but row 11 names 602 as permanent: read row 10 as 5xx.
    "r11-602": Case(200, envelope(statusCode=602), PERMANENT),
    "r11-602-string": Case(200, envelope(statusCode="602", apiCode=2004), PERMANENT),
    "r11-unknown-7-digit-apicode": Case(
        200, envelope(statusCode=400, apiCode=4001234), PERMANENT, "(apiCode 4001234)"
    ),
    "r11-envelope-302": Case(200, envelope(statusCode=302), PERMANENT),
}


@pytest.mark.parametrize("case", RESPONSE_CASES.values(), ids=RESPONSE_CASES.keys())
def test_response_table(case: Case) -> None:
    answer = classify_response(case.http_status, case.headers, case.body)
    assert answer.kind is case.kind, answer.detail
    assert answer.http_status == case.http_status
    if case.detail is not None:
        assert case.detail in answer.detail


def cert_error_key() -> ConnectionKey:
    return ConnectionKey("auth.example.com", 443, True, True, None, None, None, None)


def make_cert_error() -> aiohttp.ClientConnectorCertificateError:
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
    return aiohttp.ClientConnectorCertificateError(cert_error_key(), cause)


def wrapped_cert_error() -> aiohttp.ClientOSError:
    try:
        try:
            raise ssl.SSLCertVerificationError(1, "certificate verify failed")
        except ssl.SSLCertVerificationError as exc:
            raise aiohttp.ClientOSError(1, "handshake failed") from exc
    except aiohttp.ClientOSError as outer:
        return outer


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def key() -> ConnectionKey:
    return ConnectionKey("api.authing.cn", 443, True, True, None, None, None, None)


EXCEPTION_CASES: dict[str, tuple[BaseException, AnswerKind, str]] = {
    # Row 1: TLS certificate rejected.
    "r1-aiohttp-cert": (make_cert_error(), FATAL, "verify_tls"),
    "r1-ssl-cert": (ssl.SSLCertVerificationError(1, "hostname mismatch"), FATAL, "verify_tls"),
    "r1-cert-in-cause": (wrapped_cert_error(), FATAL, "TLS certificate rejected"),
    "r1-fingerprint": (
        aiohttp.ServerFingerprintMismatch(b"a" * 32, b"b" * 32, "api.authing.cn", 443),
        FATAL,
        "verify_tls",
    ),
    # Row 2: transport trouble.
    "r2-timeout": (TimeoutError(), TRANSIENT, "timeout"),  # asyncio.TimeoutError since 3.11
    "r2-timeout-text": (TimeoutError("read"), TRANSIENT, "timeout"),
    "r2-server-timeout": (aiohttp.ServerTimeoutError("read timeout"), TRANSIENT, "timeout"),
    "r2-connection-timeout": (aiohttp.ConnectionTimeoutError(), TRANSIENT, "timeout"),
    "r2-socket-timeout": (aiohttp.SocketTimeoutError(), TRANSIENT, "timeout"),
    "r2-refused": (
        aiohttp.ClientConnectorError(key(), ConnectionRefusedError(111, "refused")),
        TRANSIENT,
        "connection refused",
    ),
    "r2-connect-timeout-oserror": (
        aiohttp.ClientConnectorError(key(), TimeoutError(110, "timed out")),
        TRANSIENT,
        "timeout",
    ),
    "r2-dns": (
        aiohttp.ClientConnectorDNSError(key(), OSError(-2, "Name or service not known")),
        TRANSIENT,
        "DNS failure",
    ),
    "r2-connector-other": (
        aiohttp.ClientConnectorError(key(), OSError(101, "Network is unreachable")),
        TRANSIENT,
        "cannot connect",
    ),
    "r2-tls-not-cert": (
        aiohttp.ClientConnectorSSLError(key(), ssl.SSLError(1, "wrong version number")),
        TRANSIENT,
        "TLS error",
    ),
    "r2-disconnected": (aiohttp.ServerDisconnectedError(), TRANSIENT, "server disconnected"),
    "r2-payload": (
        aiohttp.ClientPayloadError("Response payload is not completed"),
        TRANSIENT,
        "truncated body",
    ),
    "r2-reset": (
        ConnectionResetError(104, "Connection reset by peer"),
        TRANSIENT,
        "connection reset",
    ),
    "r2-refused-plain": (ConnectionRefusedError(111, "refused"), TRANSIENT, "connection refused"),
    "r2-client-os": (aiohttp.ClientOSError(32, "Broken pipe"), TRANSIENT, "connection error"),
    "r2-oserror": (OSError(5, "I/O error"), TRANSIENT, "connection error"),
    "r2-ssl-error": (ssl.SSLError(1, "bad record mac"), TRANSIENT, "TLS error"),
    "r2-client-error": (aiohttp.ClientError("weird"), TRANSIENT, "HTTP client error"),
    # Unknown: transient, never raised.
    "unknown-value-error": (ValueError("boom"), TRANSIENT, "unexpected error"),
    "unknown-bad-str": (BadStr(), TRANSIENT, "BadStr"),
    "unknown-cancelled": (asyncio.CancelledError(), TRANSIENT, "unexpected error"),
}


@pytest.mark.parametrize(
    ("exc", "kind", "detail"), EXCEPTION_CASES.values(), ids=EXCEPTION_CASES.keys()
)
def test_exception_table(exc: BaseException, kind: AnswerKind, detail: str) -> None:
    answer = classify_exception(exc)
    assert answer.kind is kind
    assert detail in answer.detail
    assert answer.http_status is None


def test_cert_rejection_names_the_host() -> None:
    assert "auth.example.com" in classify_exception(make_cert_error()).detail


def test_exception_cycle_in_context_chain_does_not_hang() -> None:
    first, second = ValueError("a"), ValueError("b")
    first.__context__ = second
    second.__context__ = first
    assert classify_exception(first).kind is TRANSIENT


# Fields carried for the record (spec 6: http_status, statusCode, apiCode, message, requestId).


def test_fields_of_a_permanent_answer() -> None:
    body = envelope(statusCode="404", apiCode="2004", message="用户不存在", requestId="r-42")
    answer = classify_response(200, {}, body)
    assert answer == Answer(
        PERMANENT,
        "user not found (apiCode 2004)",
        http_status=200,
        status_code=404,
        api_code=2004,
        message="用户不存在",
        request_id="r-42",
    )


def test_long_message_and_request_id_are_truncated() -> None:
    body = envelope(statusCode=400, message="m" * 10_000, requestId="r" * 1000)
    answer = classify_response(200, {}, body)
    assert answer.message == "m" * MESSAGE_MAX_CHARS
    assert answer.request_id == "r" * REQUEST_ID_MAX_CHARS


def test_message_and_request_id_are_made_storable() -> None:
    body = b'{"statusCode":400,"message":"a\\u0000b\\ud800c","requestId":"r\\u0000"}'
    answer = classify_response(200, {}, body)
    assert answer.message == "a\ufffdb?c"
    assert answer.request_id == "r\ufffd"
    assert answer.message is not None and answer.message.encode()  # encodes as UTF-8


def test_exception_text_is_made_storable() -> None:
    answer = classify_exception(OSError(5, "bad \ud800 \x00 text"))
    assert "\x00" not in answer.detail
    assert answer.detail.encode()


@pytest.mark.parametrize("value", [123, None, ["r"], {"id": "r"}, True])
def test_non_string_message_and_request_id_are_dropped(value: Any) -> None:
    answer = classify_response(200, {}, envelope(statusCode=400, message=value, requestId=value))
    assert answer.message is None
    assert answer.request_id is None


@pytest.mark.parametrize("value", ["12", "-3", 12, " 12 "])
def test_codes_accept_ints_and_numeric_strings(value: Any) -> None:
    answer = classify_response(200, {}, envelope(statusCode=400, apiCode=value))
    assert answer.api_code == int(str(value).strip())


@pytest.mark.parametrize("value", [True, False, 12.0, "12.0", "1e3", "١٢", "", "-", None, [12]])
def test_codes_reject_everything_else(value: Any) -> None:
    answer = classify_response(200, {}, envelope(statusCode=400, apiCode=value))
    assert answer.api_code is None
    assert answer.kind is PERMANENT


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "7"},
        {"retry-after": "7"},
        {"RETRY-AFTER": "7", "Date": "garbage"},
        CIMultiDictProxy(CIMultiDict({"Retry-After": "7"})),
        CIMultiDict({"rEtRy-AfTeR": "7"}),
    ],
    ids=["canonical", "lower", "upper", "cimultidictproxy", "cimultidict"],
)
def test_retry_after_is_read_case_insensitively(headers: Any) -> None:
    assert classify_response(429, headers, b"").retry_after_seconds == 7.0


def test_retry_after_is_capped_and_garbage_ignored() -> None:
    assert classify_response(429, {"Retry-After": "3600"}, b"").retry_after_seconds == 60.0
    assert classify_response(429, {"Retry-After": "-1"}, b"").retry_after_seconds is None
    assert classify_response(429, {"Retry-After": "soon"}, b"").retry_after_seconds is None
    not_text: Any = {"Retry-After": 5}
    assert classify_response(429, not_text, b"").retry_after_seconds is None


def test_retry_after_honoured_on_503_and_envelope_429() -> None:
    assert classify_response(503, {"retry-after": "2"}, b"").retry_after_seconds == 2.0
    body = envelope(statusCode=429)
    assert classify_response(200, {"retry-after": "4"}, body).retry_after_seconds == 4.0


def test_retry_after_not_attached_to_final_answers() -> None:
    headers = {"Retry-After": "5"}
    assert classify_response(200, headers, ok(True)).retry_after_seconds is None
    assert classify_response(200, headers, envelope(statusCode=404)).retry_after_seconds is None


@pytest.mark.parametrize("name", ["Date", "date", "DATE"])
def test_server_date_from_date_header(name: str) -> None:
    answer = classify_response(401, {name: "Wed, 25 Nov 2026 08:00:00 GMT"}, b"")
    assert answer.server_date == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def test_server_date_is_aware_utc_and_garbage_is_none() -> None:
    answer = classify_response(200, {"date": "Wed, 25 Nov 2026 10:00:00 +0200"}, ok(True))
    assert answer.server_date == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    assert answer.server_date is not None and answer.server_date.tzinfo is UTC
    assert classify_response(200, {"date": "yesterday"}, ok(True)).server_date is None
    assert classify_response(200, {"date": "x" * 10_000}, ok(True)).server_date is None
    assert classify_response(200, {}, ok(True)).server_date is None


def test_aiohttp_headers_work() -> None:
    headers = CIMultiDictProxy(
        CIMultiDict([("Date", "Wed, 25 Nov 2026 08:00:00 GMT"), ("Content-Type", "json")])
    )
    answer = classify_response(200, headers, ok(True))
    assert answer.kind is ACTIVE
    assert answer.server_date == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


# Garbage of every shape: never raises, never becomes ACTIVE/INACTIVE.


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,  # RecursionError inside json
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b"\x00" * 64,
        b"1" * 5000,  # int longer than Python's str->int digit limit
        b"NaN",
        b'{"statusCode":200,"data":{"active":true}}' * 2,
        b" " * (2 << 20),  # oversized
    ],
    ids=["deep-array", "deep-object", "nuls", "huge-int", "nan", "two-docs", "oversized"],
)
def test_garbage_bodies(body: bytes) -> None:
    answer = classify_response(200, {}, body)
    assert answer.kind is TRANSIENT


def test_wrong_argument_types_do_not_raise() -> None:
    answer = classify_response(200, None, ok(True))  # type: ignore[arg-type]
    assert answer.kind is TRANSIENT
    answer = classify_response("200", {}, ok(True))  # type: ignore[arg-type]
    assert answer.kind is TRANSIENT
    answer = classify_response(200, {}, "not bytes")  # type: ignore[arg-type]
    assert answer.kind is TRANSIENT


def test_json_in_other_unicode_encodings_is_still_json() -> None:
    # json.loads detects UTF-16/32 and a UTF-8 BOM from the bytes; the envelope is valid.
    for body in (ok(True).decode().encode("utf-16"), b"\xef\xbb\xbf" + ok(False)):
        assert classify_response(200, {}, body).kind in (ACTIVE, INACTIVE)


# Property tests.

_SPECIAL = {1000, 1001, 2020, 2224}
_NUMERIC = re.compile(r"-?[0-9]+")


def code_of(value: Any) -> int | None:
    """The test's own reading of spec 6: JSON int or numeric string, else absent."""
    if type(value) is int:
        number = value
    elif isinstance(value, str) and len(value) <= 16 and _NUMERIC.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        return None
    return number if abs(number) < 2**31 else None


def expected_active(http_status: int, body: bytes) -> bool | None:
    """What the table says about activity: a bool only when row 8 applies."""
    if http_status in (401, 403, 408, 429) or http_status >= 500:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if type(parsed) is not dict or code_of(parsed.get("statusCode")) != 200:
        return None
    if code_of(parsed.get("apiCode")) in _SPECIAL:
        return None
    data = parsed.get("data")
    active = data.get("active") if type(data) is dict else None
    return active if type(active) is bool else None


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=25,
)
codes = (
    st.sampled_from(
        [200, "200", " 200", 429, "429", 401, 403, "403", 404, 499, 500, "503", 602, True, 200.0]
    )
    | json_values
)
api_codes = st.sampled_from([1000, "1000", 1001, 2004, "2011", 2020, 2224, 20001]) | json_values
actives = st.booleans() | json_values
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "statusCode": codes,
        "apiCode": api_codes,
        "message": json_values,
        "requestId": json_values,
        "data": st.fixed_dictionaries({}, optional={"active": actives}) | json_values,
    },
)
statuses = st.integers(min_value=100, max_value=599) | st.sampled_from(
    [200, 200, 200, 301, 401, 403, 404, 408, 429, 500, 502]
)
header_names = st.sampled_from(["Date", "date", "Retry-After", "RETRY-AFTER", "X-Other"])
header_dicts = st.dictionaries(header_names | st.text(max_size=12), st.text(max_size=40))


def check_invariants(http_status: int, headers: dict[str, str], body: bytes) -> None:
    answer = classify_response(http_status, headers, body)
    assert isinstance(answer, Answer)
    assert isinstance(answer.kind, AnswerKind)
    assert isinstance(answer.detail, str) and answer.detail
    expected = expected_active(http_status, body)
    assert answer.active == expected, (answer, body)
    if answer.retry_after_seconds is not None:
        assert 0 <= answer.retry_after_seconds <= 60
    for text, limit in (
        (answer.message, MESSAGE_MAX_CHARS),
        (answer.request_id, REQUEST_ID_MAX_CHARS),
    ):
        if text is not None:
            assert len(text) <= limit
            assert "\x00" not in text
            text.encode()  # no lone surrogates
    if http_status == 429:
        assert answer.kind is THROTTLED
    if http_status >= 500 or http_status == 408:
        assert answer.kind in (TRANSIENT, THROTTLED, AUTH)


@settings(max_examples=300)
@given(statuses, header_dicts, st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(
    http_status: int, headers: dict[str, str], body: bytes
) -> None:
    check_invariants(http_status, headers, body)


@settings(max_examples=300)
@given(statuses, header_dicts, json_values)
def test_arbitrary_json_never_raises(http_status: int, headers: dict[str, str], value: Any) -> None:
    check_invariants(http_status, headers, json.dumps(value).encode())


@settings(max_examples=500)
@given(statuses, header_dicts, envelopes)
def test_envelope_shaped_json(http_status: int, headers: dict[str, str], value: Any) -> None:
    check_invariants(http_status, headers, json.dumps(value, ensure_ascii=False).encode())


@settings(max_examples=200)
@given(statuses, envelopes, st.integers(min_value=0, max_value=20))
def test_truncated_json_never_active(http_status: int, value: Any, cut: int) -> None:
    body = json.dumps(value).encode()
    truncated = body[: max(0, len(body) - 1 - cut)]
    check_invariants(http_status, {}, truncated)


any_text = st.text(st.characters(exclude_categories=()), max_size=40)  # surrogates and NULs too


@given(statuses, any_text, any_text)
def test_any_message_text_is_storable(http_status: int, message: str, request_id: str) -> None:
    body = json.dumps({"statusCode": 400, "message": message, "requestId": request_id}).encode()
    check_invariants(http_status, {}, body)


@given(st.builds(Exception, st.text()) | st.builds(OSError, st.integers(), st.text()))
def test_arbitrary_exceptions_are_transient(exc: BaseException) -> None:
    assert classify_exception(exc).kind is TRANSIENT


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # past 64 bits too
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),  # lone surrogates too
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(value=json_values, ascii_only=st.booleans())
def test_the_fast_reader_accepts_and_returns_what_json_does(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    try:
        body = text.encode()
    except UnicodeEncodeError:  # a raw lone surrogate: no UTF-8 body can carry it
        body = text.encode("utf-8", "surrogatepass")
    try:
        expected = json.loads(body)
    except ValueError:
        with pytest.raises(ValueError):
            loads(body)
        return
    # NaN != NaN: compare the JSON text of both readings instead.
    assert json.dumps(loads(body), sort_keys=True) == json.dumps(
        as_orjson_reads(expected), sort_keys=True
    )


def as_orjson_reads(value: Any) -> Any:
    """The one difference allowed: integers past 64 bits come back as floats (no field the
    classifier reads can tell: codes past 2**31 count as absent either way)."""
    if type(value) is int and not -(2**63) <= value < 2**64:
        return float(value)
    if isinstance(value, list):
        return [as_orjson_reads(v) for v in value]
    if isinstance(value, dict):
        return {k: as_orjson_reads(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1, "a": 2}',  # duplicate keys: the last one wins in both
        b'{"statusCode": NaN}',
        b'{"n": 123456789012345678901234567890}',
        b'{"s": "\\ud800"}',
        b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
        b'{"s": "\xff"}',  # not UTF-8
        b"[1,]",
        b"",
    ],
)
def test_the_fast_reader_on_edge_bodies(body: bytes) -> None:
    try:
        expected = json.loads(body)
    except ValueError:
        with pytest.raises(ValueError):
            loads(body)
    else:
        assert json.dumps(loads(body)) == json.dumps(as_orjson_reads(expected))
