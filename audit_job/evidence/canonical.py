"""The canonical form of a run, byte for byte, and its digest.

A run is two files:

    run.json       one line: the run's header (its audit_run row and its chain link)
    results.jsonl  one line per session_check row, ordered by app_id then user_id
                   (UTF-8 byte order)

Each line is canonical JSON followed by "\\n": keys sorted, no whitespace, UTF-8 (no \\u
escapes beyond the ones JSON requires: `"`, `\\`, control characters, with \\b \\f \\n \\r \\t
short), integers as integers, true/false/null, times as `YYYY-MM-DDTHH:MM:SS.ffffffZ`
(UTC, always six fraction digits). For documents without fractional numbers this is RFC
8785 (JCS), and, when no key holds a character beyond U+FFFF, exactly what Python's
`json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` writes (JCS
sorts keys by UTF-16 code units, Python by code points: they differ only there).

The run's digest is SHA-256 over run.json followed by results.jsonl:
`cat run.json results.jsonl | sha256sum`. run.json carries the previous link's digest, so
the digests form a hash chain.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

EVIDENCE_FORMAT = 1
TIME_FORMAT = "YYYY-MM-DDTHH:MM:SS.ffffffZ"

# One results.jsonl line: the session_check columns that carry an answer, in the order the
# row readers yield them (store/evidence_rows.py). The JSON keys are these, sorted.
CHECK_FIELDS = (
    "app_id",
    "user_id",
    "status",
    "active",
    "checked_at",
    "attempts",
    "http_status",
    "status_code",
    "api_code",
    "message",
    "request_id",
    "latency_ms",
)
# The audit_run columns in run.json (with the chain link's fields added, see run_header).
RUN_FIELDS = (
    "id",
    "trigger",
    "status",
    "started_at",
    "finished_at",
    "scheduled_for",
    "snapshot_at",
    "owner",
    "epoch",
    "filters",
    "total",
    "active",
    "inactive",
    "failed",
    "retries",
    "throttled",
    "message",
    "missed_count",
    "missed_first",
    "missed_last",
    "config_digest",
)
LINK_FIELDS = ("chain_seq", "prev_run_id", "prev_digest")

_encode_string = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses


def format_time(value: datetime | None) -> str | None:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC; None stays None."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"expected an aware datetime, got {value!r}")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")[:26] + "Z"


def sqlite_time(stored: str | None) -> str | None:
    """A time as SQLite stores it ('YYYY-MM-DD HH:MM:SS.ffffff', naive UTC), canonical."""
    if stored is None:
        return None
    if len(stored) == 26 and stored[10] == " ":
        return f"{stored[:10]}T{stored[11:]}Z"
    parsed = datetime.fromisoformat(stored)  # a shorter form some other writer left
    return format_time(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


def _number(value: float) -> str:
    # RFC 8785 / ECMAScript: integral values without ".0", exponents without padding.
    if not math.isfinite(value):
        raise ValueError(f"not representable in canonical JSON: {value!r}")
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else "+"
        text = f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"
    return text


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, str):
        out.append(_encode_string(value))
    elif isinstance(value, datetime):
        out.append(_encode_string(format_time(value) or ""))
    elif isinstance(value, Mapping):
        out.append("{")
        # JCS orders keys by their UTF-16 code units (equal to code points for BMP keys).
        for n, key in enumerate(sorted(value, key=lambda k: str(k).encode("utf-16-be"))):
            if n:
                out.append(",")
            out.append(_encode_string(str(key)))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for n, item in enumerate(value):
            if n:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"not representable in canonical JSON: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """Canonical JSON of `value` as UTF-8 bytes (no trailing newline)."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")


def line(value: Any) -> bytes:
    return dumps(value) + b"\n"


_CHECK_TEMPLATE = (
    '{"active":%s,"api_code":%s,"app_id":%s,"attempts":%d,"checked_at":%s,"http_status":%s,'
    '"latency_ms":%s,"message":%s,"request_id":%s,"status":%s,"status_code":%s,"user_id":%s}\n'
)


def check_line(row: Sequence[Any]) -> str:
    """One results.jsonl line (text) from a row in CHECK_FIELDS order whose checked_at is
    already canonical text, whose integers are ints and whose active is a bool (or 0/1)
    or None.

    The hot path of a digest (a million rows per run): one %-format of a fixed template
    instead of the generic encoder, equal to `line(dict(zip(CHECK_FIELDS, row)))` for
    such rows (a test keeps it so)."""
    app, user, status, active, at, attempts, http, code, api, message, request, latency = row
    return _CHECK_TEMPLATE % (
        "null" if active is None else ("true" if active else "false"),
        "null" if api is None else api,
        _encode_string(app),
        attempts,
        "null" if at is None else '"' + at + '"',
        "null" if http is None else http,
        "null" if latency is None else latency,
        "null" if message is None else _encode_string(message),
        "null" if request is None else _encode_string(request),
        _encode_string(status),
        "null" if code is None else code,
        _encode_string(user),
    )


def run_header(
    run: Mapping[str, Any], seq: int, prev_run_id: int | None, prev_digest: str | None
) -> dict[str, Any]:
    """run.json's object: the audit_run columns (times canonical, filters parsed), the
    chain link, and the format version."""
    header: dict[str, Any] = {}
    for name in RUN_FIELDS:
        value = run.get(name)
        if isinstance(value, datetime):
            value = format_time(value)
        header[name] = value
    filters = header["filters"]
    header["filters"] = json.loads(filters) if isinstance(filters, str) else filters
    header.update(
        chain_seq=seq, prev_run_id=prev_run_id, prev_digest=prev_digest, format=EVIDENCE_FORMAT
    )
    return header


class RunDigest:
    """SHA-256 over run.json then results.jsonl, fed as the lines are made."""

    def __init__(self, header_line: bytes) -> None:
        self._hash = hashlib.sha256(header_line)

    def add_lines(self, lines: Iterable[str]) -> None:
        text = "".join(lines)
        self._hash.update(text.encode("utf-8"))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
