"""The canonical form: byte for byte what json.dumps(sort_keys, compact, UTF-8) writes,
RFC 8785 numbers, fixed-width UTC times; and the configuration without secrets."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from audit_job.config import Settings
from audit_job.evidence import canonical
from audit_job.evidence.config import config_document, evidence_config, strip_url_credentials

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
INT = st.integers(-(2**63), 2**63 - 1)


def reference(value: object) -> bytes:
    """The definition: what Python's json module writes, as UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# Keys within the Basic Multilingual Plane: where UTF-16 order (JCS) and code point order
# (Python) agree.
BMP_KEY = st.text(st.characters(blacklist_categories=("Cs",), max_codepoint=0xFFFF), max_size=40)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | INT | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(BMP_KEY, inner, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_dumps_is_pythons_json_for_documents_without_fractions(value: object) -> None:
    assert canonical.dumps(value) == reference(value)


def test_keys_beyond_the_bmp_sort_by_utf16_code_units_as_jcs_says() -> None:
    """U+10000 is the surrogate pair D800 DC00 in UTF-16: before U+E000, where Python's
    code point order puts it after."""
    value = {"\ue000": None, "\U00010000": None}
    assert canonical.dumps(value) == '{"\U00010000":null,"\ue000":null}'.encode()
    assert canonical.dumps(value) != reference(value)


def test_floats_follow_rfc_8785() -> None:
    assert canonical.dumps([20.0, 0.5, 1e-7, 1e21, 123456789.25, -0.0]) == (
        b"[20,0.5,1e-7,1e+21,123456789.25,0]"
    )


ROWS = st.tuples(
    TEXT.filter(bool),  # app_id
    TEXT.filter(bool),  # user_id
    st.sampled_from(["pending", "active", "inactive", "error"]),
    st.none() | st.booleans(),
    st.none() | st.just("2026-12-01T00:00:00.000000Z"),
    st.integers(0, 100),
    st.none() | st.integers(-(2**31), 2**31 - 1),
    st.none() | st.integers(-(2**31), 2**31 - 1),
    st.none() | INT,
    st.none() | TEXT,
    st.none() | TEXT,
    st.none() | st.integers(0, 2**31 - 1),
)


@given(ROWS)
def test_the_check_line_template_equals_the_definition(row: tuple) -> None:
    expected = reference(dict(zip(canonical.CHECK_FIELDS, row, strict=True))) + b"\n"
    assert canonical.check_line(row).encode("utf-8") == expected


def test_times_are_utc_with_six_fraction_digits() -> None:
    plus8 = timezone(timedelta(hours=8))
    assert canonical.format_time(datetime(2026, 12, 1, 8, 0, tzinfo=plus8)) == (
        "2026-12-01T00:00:00.000000Z"
    )
    assert canonical.format_time(datetime(2026, 12, 1, 0, 0, 1, 42, tzinfo=UTC)) == (
        "2026-12-01T00:00:01.000042Z"
    )
    assert canonical.sqlite_time("2026-12-01 00:00:01.000042") == "2026-12-01T00:00:01.000042Z"
    assert canonical.sqlite_time("2026-12-01 00:00:01") == "2026-12-01T00:00:01.000000Z"


def test_the_header_holds_the_row_and_the_link() -> None:
    run = {name: None for name in canonical.RUN_FIELDS}
    run.update(id=7, trigger="manual", status="succeeded", total=0, filters='{"app": "crm"}')
    run["started_at"] = datetime(2026, 12, 1, tzinfo=UTC)
    header = canonical.run_header(run, 3, 6, "ab" * 32)
    assert header["filters"] == {"app": "crm"}
    assert header["started_at"] == "2026-12-01T00:00:00.000000Z"
    assert (header["chain_seq"], header["prev_run_id"], header["prev_digest"]) == (3, 6, "ab" * 32)
    assert header["format"] == canonical.EVIDENCE_FORMAT


def test_the_configuration_loses_every_secret_and_keeps_the_rest() -> None:
    settings = Settings.model_validate(
        {
            "database": {"url": "postgresql+asyncpg://audit:db-Pa55@db.internal/audit"},
            "authing": {"access_key_id": "ak-1", "access_key_secret": "sk-TopSecret"},
            "source": {
                "url": "postgresql+asyncpg://reader:src-Pa55@hr/identity?sslpassword=ssl-Pa55",
                "query": "SELECT app_id, user_id FROM t",
            },
        }
    )
    assert isinstance(settings.authing.access_key_secret, SecretStr)
    body, digest = config_document(settings)
    text = body.decode()
    for secret in ("sk-TopSecret", "db-Pa55", "src-Pa55", "ssl-Pa55", "***"):
        assert secret not in text
    data = evidence_config(settings)
    assert "access_key_secret" not in data["authing"]
    assert data["authing"]["access_key_id"] == "ak-1"
    assert data["database"]["url"] == "postgresql+asyncpg://audit@db.internal/audit"
    assert data["source"]["url"] == "postgresql+asyncpg://reader@hr/identity"
    assert data["source"]["query"] == "SELECT app_id, user_id FROM t"
    assert body == canonical.line(data) and digest == canonical.sha256_hex(body)
    assert strip_url_credentials("not a url://u:p@h") == "not a url://u@h"


SQLITE_ROWS = st.lists(
    st.tuples(
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                min_size=1, max_size=20),
        st.none() | st.text(st.characters(blacklist_categories=("Cs",),
                                          blacklist_characters="\0"), max_size=30),
        st.none() | st.booleans(),
        st.none() | INT,
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda row: row[0],
)  # fmt: skip


@given(SQLITE_ROWS)
def test_sqlites_own_lines_equal_the_template(rows: list[tuple]) -> None:
    """On SQLite the database writes each line (store/evidence_rows.py): byte for byte
    what the template (and so json.dumps) writes from the same row."""
    import sqlite3

    from sqlalchemy import create_engine

    from audit_job.store.evidence_rows import _SQLITE_LINE_SQL
    from audit_job.store.tables import metadata, session_check

    engine = create_engine("sqlite://")
    metadata.create_all(engine, tables=[session_check.metadata.tables["audit_run"], session_check])
    raw = engine.raw_connection().driver_connection
    assert isinstance(raw, sqlite3.Connection)
    raw.execute("INSERT INTO audit_run (id, trigger, status, started_at, total, active, inactive,"
                " failed, retries, throttled) VALUES (1, 'manual', 'succeeded', '2026-01-01', 0,"
                " 0, 0, 0, 0, 0)")  # fmt: skip
    for user, message, active, api_code, at in rows:
        raw.execute(
            "INSERT INTO session_check (run_id, app_id, user_id, status, active, checked_at,"
            " attempts, api_code, message) VALUES (1, 'app', ?, 'active', ?, ?, 1, ?, ?)",
            (user, active, at.isoformat(" ", "microseconds"), api_code, message),
        )
    lines = [row[0] for row in raw.execute(_SQLITE_LINE_SQL, (1,))]
    expected = sorted(
        (
            ("app", user, "active", active, at.isoformat("T", "microseconds") + "Z", 1, None, None,
             api_code, message, None, None)
            for user, message, active, api_code, at in rows
        ),
        key=lambda row: row[1].encode(),
    )  # fmt: skip
    assert lines == [canonical.check_line(row) for row in expected]
