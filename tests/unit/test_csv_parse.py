"""The target CSV parser: header variants, rejected lines with their numbers, no crash."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_job.commands.targets import MAX_LINE_BYTES, Rejected, Row, parse_csv
from audit_job.errors import ConfigError


def parse(data: bytes) -> list[Row | Rejected]:
    return list(parse_csv(io.BytesIO(data), "t.csv"))


def rows(items: list[Row | Rejected]) -> list[tuple[int, str, str, bool | None]]:
    return [(i.line, i.app_id, i.user_id, i.enabled) for i in items if isinstance(i, Row)]


def rejected(items: list[Row | Rejected]) -> list[tuple[int, str]]:
    return [(i.line, i.reason) for i in items if isinstance(i, Rejected)]


@pytest.mark.parametrize(
    "data",
    [
        b"app_id,user_id\na1,u1\na2,u2\n",
        b"\xef\xbb\xbfapp_id,user_id\na1,u1\na2,u2\n",  # BOM from spreadsheet exports
        b"app_id,user_id\r\na1,u1\r\na2,u2\r\n",  # CRLF
        b"app_id,user_id\na1,u1\na2,u2",  # no final newline
        b"user_id,app_id\nu1,a1\nu2,a2\n",  # columns swapped
        b"note,user_id,extra,app_id\nx,u1,y,a1\n,u2,,a2\n",  # extra columns ignored
        b" App_ID , USER_ID \n a1 , u1 \na2,u2\n",  # header case and spaces, padded cells
        b"\n\napp_id,user_id\n\na1,u1\na2,u2\n",  # blank lines around
    ],
    ids=["plain", "bom", "crlf", "no-eol", "swapped", "extra", "case", "blank"],
)
def test_header_variants_give_the_same_pairs(data: bytes) -> None:
    items = parse(data)
    assert rejected(items) == []
    assert [(r[1], r[2], r[3]) for r in rows(items)] == [("a1", "u1", None), ("a2", "u2", None)]


def test_line_numbers_count_blank_lines_and_crlf() -> None:
    items = parse(b"\xef\xbb\xbfapp_id,user_id\r\n\r\na1,u1\r\n\r\n,u2\r\na3,u3\r\n")
    assert rows(items) == [(3, "a1", "u1", None), (6, "a3", "u3", None)]
    assert rejected(items) == [(5, "empty app_id")]


def test_enabled_column_true_false_and_empty() -> None:
    data = (
        b"app_id,enabled,user_id\na,true,1\na,false,2\na,,3\na,TRUE,4\na,0,5\na,yes,6\na,maybe,7\n"
    )
    items = parse(data)
    assert rows(items) == [
        (2, "a", "1", True),
        (3, "a", "2", False),
        (4, "a", "3", None),  # empty: leave an existing pair's flag as it is
        (5, "a", "4", True),
        (6, "a", "5", False),
        (7, "a", "6", True),
    ]
    assert rejected(items) == [(8, "enabled must be true or false, got 'maybe'")]


def test_trailing_enabled_cell_may_be_missing() -> None:
    assert rows(parse(b"app_id,user_id,enabled\na,1\na,2,false\n")) == [
        (2, "a", "1", None),
        (3, "a", "2", False),
    ]


def test_every_kind_of_bad_line_is_rejected_with_its_number_and_good_rows_kept() -> None:
    giant = b"g" * (10 * 1024 * 1024)
    data = b"".join(
        [
            b"app_id,user_id\n",  # 1
            b"ok1,u1\n",  # 2
            b",u2\n",  # 3
            b"a3,\n",  # 4
            b"a4," + b"x" * 256 + b"\n",  # 5
            b"a5,u\x015\n",  # 6
            b"a6,u\x7f6\n",  # 7
            b"a7,u\x006\n",  # 8
            b"a8,caf\xe9\n",  # 9
            b"a9\n",  # 10
            b"a10,u\xe2\x80\x8b10\n",  # 11: zero-width space (format character)
            b"ok2,u12\n",  # 12
            giant + b"\n",  # 13: a 10 MB line, terminated
            b'"ok3","u,14"\n',  # 14: quoted comma is part of the id
            b'a15,"unterminated\n',  # 15
            b"ok4," + "é".encode() * 255 + b"\n",  # 16: 255 characters, 510 bytes
            giant,  # 17: a 10 MB last line without a newline
        ]
    )
    items = parse(data)
    assert rows(items) == [
        (2, "ok1", "u1", None),
        (12, "ok2", "u12", None),
        (14, "ok3", "u,14", None),
        (16, "ok4", "é" * 255, None),
    ]
    reasons = dict(rejected(items))
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17]
    assert reasons[3] == "empty app_id"
    assert reasons[4] == "empty user_id"
    assert reasons[5] == "user_id longer than 255 characters (256)"
    assert reasons[6] == "user_id contains a control character (U+0001)"
    assert reasons[7] == "user_id contains a control character (U+007F)"
    assert reasons[8] == "contains a NUL byte"
    assert reasons[9] == "not valid UTF-8 (byte 7)"
    assert reasons[10] == "missing column user_id"
    assert reasons[11] == "user_id contains a control character (U+200B)"
    assert reasons[13] == reasons[17] == f"line longer than {MAX_LINE_BYTES} bytes"
    assert reasons[15].startswith("malformed CSV")


def test_missing_header_columns_and_empty_input_stop_the_import() -> None:
    with pytest.raises(ConfigError, match=r"t\.csv: line 1: header must name app_id and user_id"):
        parse(b"app,user\na,b\n")
    with pytest.raises(ConfigError, match=r"t\.csv: empty file"):
        parse(b"\n\r\n")
    with pytest.raises(ConfigError, match=r"t\.csv: line 1: header line too long"):
        parse(b"x" * (MAX_LINE_BYTES * 3))


ids = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp"),
    ),
    min_size=1,
    max_size=255,
).filter(lambda s: s == s.strip())


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.tuples(ids, ids, st.sampled_from([None, True, False])), max_size=20))
def test_any_valid_pair_survives_a_csv_round_trip(
    pairs: list[tuple[str, str, bool | None]],
) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["app_id", "user_id", "enabled"])
    for app, user, enabled in pairs:
        writer.writerow([app, user, "" if enabled is None else str(enabled).lower()])
    items = parse(out.getvalue().encode("utf-8"))
    assert rejected(items) == []
    assert [(r[1], r[2], r[3]) for r in rows(items)] == pairs
    assert [r[0] for r in rows(items)] == list(range(2, len(pairs) + 2))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=15))
def test_arbitrary_bytes_never_crash_and_each_line_is_accounted_for(
    lines: list[bytes],
) -> None:
    body = [line.replace(b"\n", b"") for line in lines]
    items = parse(b"app_id,user_id\n" + b"\n".join(body))
    numbers = [i.line for i in items]
    assert numbers == sorted(set(numbers))
    assert all(2 <= n <= len(body) + 1 for n in numbers)
    for item in items:
        if isinstance(item, Row):
            for value in (item.app_id, item.user_id):
                assert value and len(value) <= 255 and "\x00" not in value
    # Only blank lines (nothing but spaces or a CR) may be skipped silently.
    silent = set(range(2, len(body) + 2)) - set(numbers)
    for n in silent:
        assert not body[n - 2].rstrip(b"\r").decode("utf-8", "replace").strip()
