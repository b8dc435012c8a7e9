"""Classify one attempt at check-session-status into an `Answer` (spec section 6). Pure.

`classify_exception` covers table rows 1-2 (the request failed before an answer arrived),
`classify_response` rows 3-11, first matching row wins. Neither ever raises: garbage in any
form becomes a retryable or permanent answer, and only `statusCode` 200 with a JSON boolean
`data.active` becomes ACTIVE or INACTIVE.

Departures from the table, on purpose:
- `apiCode` 1000 (system busy, row 4) is THROTTLED, not plain TRANSIENT: section 7 counts it
  as a throttle that lowers the adaptive rate. Both kinds are retried the same way.
- Codes (`statusCode`, `apiCode`) outside +-(2**31 - 1) count as absent: they cannot be real
  and would overflow the integer columns they are stored in.
- The `Retry-After` header is read for every retryable answer (503 too, not only 429).
- Row 10 ("envelope statusCode >= 500") is read as the 5xx class, 500-599: row 11 names
  envelope `statusCode` 602 as permanent, which a literal ">= 500" would have made transient.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from audit_job.models import Answer, AnswerKind
from audit_job.retry import parse_retry_after

MESSAGE_MAX_CHARS = 500
REQUEST_ID_MAX_CHARS = 128
# A real answer is ~150 bytes; anything this large is a proxy page or worse, not an envelope.
BODY_MAX_BYTES = 1 << 20

THROTTLE_API_CODES = frozenset({1000})
AUTH_API_CODES = frozenset({1001, 2020, 2224})
_SPECIAL_API_CODES = THROTTLE_API_CODES | AUTH_API_CODES
API_CODE_NAMES = {2004: "user not found", 2011: "app not found"}
_CODE_LIMIT = 2**31
_DATE_MAX_CHARS = 64

_ACTIVE = AnswerKind.ACTIVE
_INACTIVE = AnswerKind.INACTIVE
_TRANSIENT = AnswerKind.TRANSIENT
_THROTTLED = AnswerKind.THROTTLED
_AUTH = AnswerKind.AUTH
_PERMANENT = AnswerKind.PERMANENT
_FATAL = AnswerKind.FATAL
_RETRYABLE = frozenset(kind for kind in AnswerKind if kind.is_retryable)
_CI_HEADERS = (CIMultiDictProxy, CIMultiDict)

# Body shapes, for details only.
_EMPTY = "empty body"
_NOT_JSON = "non-JSON body"
_NOT_OBJECT = "JSON body not an object"
_NO_STATUS = "JSON body without a usable statusCode"
_TOO_LARGE = "oversized body"


def classify_response(http_status: int, headers: Mapping[str, str], body: bytes) -> Answer:
    """Rows 3-11 of the spec's table for an answer that arrived in full. Never raises."""
    try:
        return _classify(http_status, headers, body)
    except Exception as exc:  # a classifier bug must cost one retry, not a worker
        return Answer(
            _TRANSIENT,
            f"unclassifiable answer ({type(exc).__name__})",
            http_status=http_status if type(http_status) is int else None,
        )


def _classify(http_status: int, headers: Mapping[str, str], body: bytes) -> Answer:
    envelope: dict[str, Any] | None = None
    shape = _EMPTY
    if body:
        if len(body) > BODY_MAX_BYTES:
            shape = _TOO_LARGE
        else:
            try:
                parsed = loads(body)
            except Exception:  # ValueError, UnicodeDecodeError, RecursionError, TypeError
                shape = _NOT_JSON
            else:
                if type(parsed) is dict:
                    envelope = parsed
                else:
                    shape = _NOT_OBJECT

    status_code = api_code = None
    message = request_id = None
    if envelope is not None:
        status_code = _as_code(envelope.get("statusCode"))
        api_code = _as_code(envelope.get("apiCode"))
        raw = envelope.get("message")
        if type(raw) is str:
            message = _storable(raw[:MESSAGE_MAX_CHARS])
        raw = envelope.get("requestId")
        if type(raw) is str:
            request_id = _storable(raw[:REQUEST_ID_MAX_CHARS])
        if status_code is None:
            shape = _NO_STATUS

    # The common case first: every earlier row needs a non-200 code or a special apiCode.
    if http_status == 200 and status_code == 200 and api_code not in _SPECIAL_API_CODES:
        kind, detail = _row_8_or_9(envelope)
    else:
        kind, detail = _rows(http_status, status_code, api_code, envelope, shape)

    retry_after = None
    if kind in _RETRYABLE:
        retry_after = parse_retry_after(_header(headers, "retry-after"))
    # Positional, in field order: this runs once per request.
    return Answer(
        kind,
        detail,
        http_status,
        status_code,
        api_code,
        message,
        request_id,
        retry_after,
        _parse_date(_header(headers, "date")),
    )


def _rows(
    http_status: int,
    status_code: int | None,
    api_code: int | None,
    envelope: dict[str, Any] | None,
    shape: str,
) -> tuple[AnswerKind, str]:
    # Row 3: throttled in either layer.
    if http_status == 429:
        return _THROTTLED, "HTTP 429 throttled"
    if status_code == 429:
        return _THROTTLED, "statusCode 429 throttled"
    # Row 4: system busy, whatever the statusCode (counted as a throttle, spec 7).
    if api_code in THROTTLE_API_CODES:
        return _THROTTLED, f"apiCode {api_code} system busy"
    # Row 5: credentials rejected in either layer.
    if http_status in (401, 403):
        return _AUTH, f"auth rejected: HTTP {http_status}"
    if status_code in (401, 403):
        return _AUTH, f"auth rejected: statusCode {status_code}"
    if api_code in AUTH_API_CODES:
        return _AUTH, f"auth rejected: apiCode {api_code}"
    # Row 6: the gateway or server failed, whatever the body says.
    if http_status == 408 or http_status >= 500:
        what = shape if status_code is None else f"statusCode {status_code}"
        return _TRANSIENT, f"HTTP {http_status} ({what})"
    # Row 7: no usable envelope. Redirects and 404s mean the URL is wrong for every pair,
    # so they count toward the auth stop; never follow a redirect (the POST body is lost).
    if status_code is None:
        if 300 <= http_status < 400 or http_status == 404:
            return _AUTH, f"HTTP {http_status} ({shape}): wrong host, scheme or path?"
        if 400 <= http_status < 500:
            return _PERMANENT, f"HTTP {http_status} ({shape})"
        return _TRANSIENT, f"HTTP {http_status} malformed answer ({shape})"
    # Rows 8-9.
    if status_code == 200:
        return _row_8_or_9(envelope)
    # Row 10: server-side failure reported in the envelope; bounded by max_attempts.
    if 500 <= status_code < 600:
        return _TRANSIENT, f"statusCode {status_code} server error"
    # Row 11: a business error for this pair.
    name = API_CODE_NAMES.get(api_code)  # type: ignore[arg-type]
    if name is not None:
        return _PERMANENT, f"{name} (apiCode {api_code})"
    if api_code is not None:
        return _PERMANENT, f"statusCode {status_code} (apiCode {api_code})"
    return _PERMANENT, f"statusCode {status_code}"


def _row_8_or_9(envelope: dict[str, Any] | None) -> tuple[AnswerKind, str]:
    data = envelope.get("data") if envelope is not None else None
    if type(data) is dict:
        active = data.get("active")
        if active is True:
            return _ACTIVE, "active"
        if active is False:
            return _INACTIVE, "inactive"
    return _TRANSIENT, "statusCode 200 without a boolean data.active"


def loads(body: bytes) -> Any:
    """JSON as the standard library reads it, mostly by orjson (~10x faster per answer).
    What orjson refuses (NaN, lone surrogates, a byte order mark, non-UTF-8) is read again
    by `json`, so both accept and reject the same bodies. One difference remains: orjson
    reads integers past 64 bits as floats, which no field read here can tell apart (codes
    past 2**31 count as absent either way)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def _as_code(value: object) -> int | None:
    """A JSON int or a numeric string (spec 6); bools, floats and all else are absent."""
    if type(value) is int:
        return value if -_CODE_LIMIT < value < _CODE_LIMIT else None
    if type(value) is str and 0 < len(value) <= 16:
        text = value.strip()
        digits = text[1:] if text.startswith("-") else text
        if digits.isascii() and digits.isdigit():
            number = int(text)
            return number if -_CODE_LIMIT < number < _CODE_LIMIT else None
    return None


def _storable(text: str) -> str:
    """Text that every store can hold: JSON allows NUL (PostgreSQL text does not) and lone
    surrogates (UTF-8 does not); both become replacement characters."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _header(headers: Mapping[str, str], lower_name: str) -> str | None:
    """Case-insensitive lookup in any mapping; non-string values count as absent."""
    if type(headers) in _CI_HEADERS:  # aiohttp's headers: already case-insensitive
        value = headers.get(lower_name)
    else:
        value = headers.get(lower_name)
        if value is None:
            for key, candidate in headers.items():
                if isinstance(key, str) and key.lower() == lower_name:
                    value = candidate
                    break
    return value if isinstance(value, str) else None


# The Date header changes once a second at most, so one remembered parse serves nearly every
# answer of a busy run. A tuple is replaced whole, so readers never see a torn pair.
_last_date: tuple[str, datetime | None] = ("", None)


def _parse_date(value: str | None) -> datetime | None:
    global _last_date
    if value is None or len(value) > _DATE_MAX_CHARS:
        return None
    cached = _last_date
    if cached[0] == value:
        return cached[1]
    try:
        parsed: datetime | None = parsedate_to_datetime(value)
    except Exception:  # the stdlib parser raises several types on garbage
        parsed = None
    if parsed is not None:
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    _last_date = (value, parsed)
    return parsed


def classify_exception(exc: BaseException) -> Answer:
    """Rows 1-2: the attempt failed before a full answer arrived. Never raises.

    TLS certificate rejection is FATAL (retrying cannot help); everything else, unknown
    exceptions included, is TRANSIENT and bounded by max_attempts. The caller still must not
    swallow `asyncio.CancelledError`: pass only `Exception`s here.
    """
    try:
        return _classify_exception(exc)
    except Exception:
        return Answer(_TRANSIENT, "unexpected error")


def _classify_exception(exc: BaseException) -> Answer:
    cert_error = _find_cert_error(exc)
    if cert_error is not None:
        host = getattr(cert_error, "host", None) or getattr(exc, "host", None)
        where = f" for host {host}" if isinstance(host, str) and host else ""
        return Answer(
            _FATAL,
            f"TLS certificate rejected{where}: {_cert_reason(cert_error)}; trust its CA "
            "(custom CA bundle) or set verify_tls = false (insecure)",
        )
    return Answer(_TRANSIENT, f"{_transport_reason(exc)}: {_text(exc)}")


def _cert_reason(cert_error: BaseException) -> str:
    """OpenSSL's reason ("self-signed certificate", "Hostname mismatch, ..."), not the
    exception's repr that aiohttp wraps around it; else the error's text."""
    verify_error = getattr(cert_error, "certificate_error", cert_error)
    reason = getattr(verify_error, "verify_message", None)
    return reason if isinstance(reason, str) and reason else _text(cert_error)


def _find_cert_error(exc: BaseException) -> BaseException | None:
    """The certificate error in `exc` or its cause/context chain (bounded, cycle-safe)."""
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return None
        if isinstance(
            current,
            ssl.SSLCertVerificationError
            | aiohttp.ClientConnectorCertificateError
            | aiohttp.ServerFingerprintMismatch,
        ):
            return current
        current = current.__cause__ or current.__context__
    return None


def _transport_reason(exc: BaseException) -> str:
    # Order matters: aiohttp's classes inherit from several of these at once.
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError since 3.11
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "DNS failure"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(os_error, TimeoutError):
            return "timeout"
        if isinstance(exc, aiohttp.ClientSSLError):
            return "TLS error"
        return "cannot connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "truncated body"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, ssl.SSLError):
        return "TLS error"
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return "connection error"
    if isinstance(exc, aiohttp.ClientError):
        return "HTTP client error"
    return "unexpected error"


def _text(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = ""
    name = type(exc).__name__
    return _storable(f"{name}: {text[:200]}") if text else name
