"""Hostile input: CSV files and configuration files built to break the tool.

CSV goes through the real import (`targets import`, and the service it calls, fuzzed with
hypothesis): ids full of SQL metacharacters are stored verbatim (bound parameters, nothing
injected), every bad line is rejected with its number while the good ones are kept, and
files in the wrong encoding stop with one clear line. Configuration files with random
sections, keys, types and values either load or fail with ConfigError lines naming the file:
never a traceback, always exit 2 from the CLI.
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
import typing
import unicodedata
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from relsupport import cli_env, execute, query, write_config

from audit_job import config
from audit_job.commands.targets import MAX_LINE_BYTES, import_csv
from audit_job.errors import ConfigError

TESTS = Path(__file__).resolve().parent.parent
NASTY = [
    "'; DROP TABLE audit_target; --",
    '" OR 1=1 --',
    "a%_\\%",
    "Robert'); DELETE FROM session_check;--",
    "$1::text",
    ":user_id",
    "?",
    "用户-🙂",
    "x,y",
    '"quoted"',
]


def run(*args: str, cwd: Path) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "audit_job", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def csv_line(*fields: str) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue().encode()


# -- CSV through the CLI ------------------------------------------------------------------


def test_import_cli_stores_nasty_ids_verbatim_and_numbers_bad_lines(
    db_url: str, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "c.toml", {"database": {"url": db_url}})
    good = [(app, user) for app in NASTY[:5] for user in NASTY]
    lines = [b"\xef\xbb\xbfapp_id,user_id"]  # BOM, CRLF endings below
    bad_at: dict[int, str] = {}
    for number, pair in enumerate(good, start=2):
        lines.append(csv_line(*pair))
        if number % 9 == 0:  # a bad line after every few good ones
            kind, raw = [
                ("NUL", b"app,us\x00er"),
                ("UTF-8", b"app,caf\xe9"),
                ("longer than", b"app," + b"u" * (MAX_LINE_BYTES + 10)),
                ("malformed CSV", b'app,"unterminated'),
                ("missing column", b"lonely"),
                ("empty user_id", b"app,"),
                ("control character", b"app,tab\there"),
            ][len(bad_at) % 7]
            lines.append(raw)
            bad_at[len(lines)] = kind
    (tmp_path / "nasty.csv").write_bytes(b"\r\n".join(lines) + b"\r\n")
    result = run("--config", str(cfg), "targets", "import", "nasty.csv", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    reported = {}
    for line in result.stderr.strip().splitlines():
        assert line.startswith("nasty.csv: line "), line
        number = int(line.split()[2].rstrip(":"))
        reported[number] = line
    assert set(reported) == set(bad_at)
    for number, kind in bad_at.items():
        assert kind in reported[number], (kind, reported[number])
    stored = asyncio.run(query(db_url, "SELECT app_id, user_id FROM audit_target"))
    assert sorted(stored) == sorted(good)  # verbatim, and nothing else
    assert asyncio.run(query(db_url, "SELECT count(*) FROM session_check")) == [(0,)]


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    ("encoding", "content"),
    [
        ("utf-16", "app_id,user_id\r\napp,user\r\n"),
        ("utf-16-be", "\ufeffapp_id,user_id\napp,user\n"),
        ("utf-32", "app_id,user_id\napp,user\n"),
    ],
)
def test_import_cli_refuses_a_utf16_file_in_one_line(
    db_url: str, tmp_path: Path, encoding: str, content: str
) -> None:
    cfg = write_config(tmp_path / "c.toml", {"database": {"url": db_url}})
    (tmp_path / "wide.csv").write_bytes(content.encode(encoding))
    result = run("--config", str(cfg), "targets", "import", "wide.csv", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "wide.csv: line 1: not UTF-8 text (UTF-16 or binary?); save it as UTF-8"
    )
    assert asyncio.run(query(db_url, "SELECT count(*) FROM audit_target")) == [(0,)]


# -- CSV fuzzed through the import service ---------------------------------------------------


def _storable_id(text: str) -> bool:
    return (
        bool(text)
        and text == text.strip()
        and not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs") for c in text)
    )


ids = st.one_of(
    st.sampled_from(NASTY),
    st.text(min_size=1, max_size=40).filter(_storable_id),
)
bad_lines = st.sampled_from(
    [
        b"a,b\x00c",
        b"app,\xff\xfe",
        b"app," + b"z" * (MAX_LINE_BYTES + 1),
        b'"open,quote',
        b"single",
        b",user",
    ]
)
csv_files = st.lists(
    st.one_of(st.tuples(ids, ids), bad_lines, st.just(b"")), min_size=0, max_size=30
)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_fuzzed_csv_keeps_exactly_the_good_rows(db_url: str) -> None:
    loaded = config.Settings.model_validate({"database": {"url": db_url}})

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        rows=csv_files,
        bom=st.booleans(),
        eol=st.sampled_from([b"\n", b"\r\n"]),
    )
    def one(rows: list[Any], bom: bool, eol: bytes) -> None:
        asyncio.run(execute(db_url, "DELETE FROM audit_target"))
        lines = [(b"\xef\xbb\xbf" if bom else b"") + b"app_id,user_id"]
        good: set[tuple[str, str]] = set()
        bad: set[int] = set()
        for row in rows:
            if isinstance(row, tuple):
                lines.append(csv_line(*row))
                good.add(row)
            else:
                lines.append(row)
                if row:
                    bad.add(len(lines))
        data = eol.join(lines) + eol
        summary = asyncio.run(import_csv(loaded, io.BytesIO(data), "fuzz.csv"))
        assert {r.line for r in summary.rejections} == bad
        assert summary.rejected == len(bad)
        stored = asyncio.run(query(db_url, "SELECT app_id, user_id FROM audit_target"))
        assert set(stored) == good and len(stored) == len(good)
        assert summary.total_after == len(good)

    one()


# -- configuration fuzzing --------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + "}"
    escaped = "".join(
        c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}"
        for c in value
        if not 0xD800 <= ord(c) <= 0xDFFF
    )
    return f'"{escaped}"'


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The models a section's annotation holds: a table's model, or the models of an
    array of tables' blocks ([[policy]], [[sink]] of either type)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models(arg)]


KNOWN = {
    name: list(
        dict.fromkeys(key for model in _models(field.annotation) for key in model.model_fields)
    )
    for name, field in config.Settings.model_fields.items()
}
BLOCKS = {
    name
    for name, field in config.Settings.model_fields.items()
    if typing.get_origin(field.annotation) is list
}
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.text(max_size=30),
    st.datetimes(),
    st.sampled_from(["sqlite+aiosqlite:///x.db", "https://h", "0 * * * *", "UTC", "token", ""]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.from_regex(r"\A[a-z]{1,5}\Z"), scalars, max_size=2),
)
section_names = st.one_of(st.sampled_from(list(KNOWN)), st.from_regex(r"\A[a-z_]{1,10}\Z"))


@st.composite
def documents(draw: Any) -> str:
    lines = []
    for section in draw(st.lists(section_names, max_size=4, unique=True)):
        block = section in BLOCKS and draw(st.booleans())  # else: a table where blocks belong
        lines.append(f"[[{section}]]" if block else f"[{section}]")
        keys = [*KNOWN.get(section, []), "bogus_key"]
        for key in draw(st.lists(st.sampled_from(keys), max_size=5, unique=True)):
            lines.append(f"{key} = {toml_value(draw(values))}")
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=20)))
    return "\n".join(lines) + "\n"


def test_fuzzed_config_loads_or_fails_in_clear_lines(tmp_path: Path) -> None:
    path = tmp_path / "fuzz.toml"

    @settings(max_examples=300, deadline=None)
    @given(text=documents())
    def one(text: str) -> None:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        path.chmod(0o600)
        try:
            loaded = config.load(str(path), env={})
        except ConfigError as exc:
            message = str(exc)
            assert message
            for line in message.splitlines():
                assert line.startswith(f"{path}: "), line
            return
        assert loaded.settings is not None

    one()


@pytest.mark.parametrize(
    "text",
    [
        "[audit]\nconcurrency = 1e400\n",
        "[audit]\nrate_per_second = nan\n",
        "[audit]\nconcurrency = 99999999999999999999\n",
        "[database]\nurl = 5\n",
        "[database]\nurl = [1, 2]\n",
        "authing = [1, 2]\n",
        "[authing]\nhost = 1979-05-27T07:32:00\n",
        '[authing]\nverify_tls = "no"\n',
        '[schedule]\ncron = "61 * * * *"\n',
        "[audit]\nmax_attempts = { a = 1 }\n",
        "\x00\x01\x02",
        "[authing]\naccess_key_secret = 42\n",
    ],
)
def test_odd_config_values_exit_2_in_one_line_through_the_cli(tmp_path: Path, text: str) -> None:
    (tmp_path / "odd.toml").write_text(text, encoding="utf-8")
    (tmp_path / "odd.toml").chmod(0o600)
    result = run("--config", "odd.toml", "config", "show", cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("odd.toml: "), result.stderr
    if "secret" in text:  # a rejected secret is neither echoed nor garbled by redaction
        assert "42" not in result.stderr and "********" not in result.stderr
        assert "must be a string" in result.stderr
