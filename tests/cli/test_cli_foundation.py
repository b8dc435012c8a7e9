"""The foundation through real `python -m audit_job` subprocesses: config, db, targets.

Independent invocations run side by side (each is ~0.7 s of interpreter start-up);
invocations that build on each other's database state run in order.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from helpers import cli_env, run_cli, write_config
from sqlalchemy import inspect, select

from audit_job.store import migrate
from audit_job.store.engine import create_engine
from audit_job.store.tables import audit_target

SECRET = "Sup3r-S3cret-Value-42"
DB_PASSWORD = "db-pass-Zq9"


def run_parallel(
    calls: Sequence[tuple[Sequence[str], dict[str, object]]],
) -> list[subprocess.CompletedProcess[str]]:
    """Several independent CLI runs at once; results in call order."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(run_cli, *args, **kwargs) for args, kwargs in calls]  # type: ignore[arg-type]
        return [f.result() for f in futures]


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """stderr must be exactly one line, with no traceback."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def table_snapshot(url: str) -> list[tuple[object, ...]]:
    async def read() -> list[tuple[object, ...]]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    select(audit_target).order_by(audit_target.c.app_id, audit_target.c.user_id)
                )
                return [tuple(row) for row in rows]
        finally:
            await engine.dispose()

    return asyncio.run(read())


# -- configuration -------------------------------------------------------------------


CONFIG_ERRORS = [
    ("[audit]\nconcurency = 3\n", "bad.toml: [audit] concurency: unknown key (did you mean"),
    (
        '[audit]\nconcurrency = "ten"\n',
        'bad.toml: [audit] concurrency: must be "auto" or an integer >= 1 and <= 4096, '
        'got "ten" (line 2)',
    ),
    ("[audit]\nmax_attempts = 0\n", "bad.toml: [audit] max_attempts: must be an integer >= 1"),
    (
        '[authing]\nauth = "oauth"\n',
        'bad.toml: [authing] auth: must be one of "signature", "token", got "oauth"',
    ),
    ("[audit]\nconcurrency = 4\nbatch_size = \nmax_attempts = 2\n", "bad.toml: invalid TOML: "),
    ("[audit]\n[sources]\nurl = 'x'\n", "bad.toml: sources: unknown section (did you mean"),
    (None, "bad.toml: no such configuration file"),
]


def test_each_config_error_exits_2_with_one_line(tmp_path: Path) -> None:
    calls = []
    for number, (text, _) in enumerate(CONFIG_ERRORS):
        folder = tmp_path / str(number)
        folder.mkdir()
        if text is not None:
            (folder / "bad.toml").write_text(text, encoding="utf-8")
        calls.append((["--config", "bad.toml", "config", "show"], {"cwd": folder}))
    results = run_parallel(calls)
    for (_, expected), result in zip(CONFIG_ERRORS, results, strict=True):
        assert result.returncode == 2, (expected, result.stderr)
        assert result.stdout == ""
        assert one_line(result).startswith(expected)
    # The TOML syntax error names where it is.
    assert "line 3" in results[4].stderr


def test_lookup_order_through_the_cli(tmp_path: Path) -> None:
    write_config(tmp_path / "audit-job.toml", {"audit": {"concurrency": 7}})
    write_config(tmp_path / "env.toml", {"audit": {"concurrency": 5}})
    write_config(tmp_path / "explicit.toml", {"audit": {"concurrency": 3}})
    empty = tmp_path / "empty"
    empty.mkdir()
    env = cli_env(AUDIT_JOB_CONFIG=str(tmp_path / "env.toml"))
    show = ["config", "show", "--format", "json"]
    results = run_parallel(
        [
            (["--config", "explicit.toml", *show], {"cwd": tmp_path, "env": env}),
            (show, {"cwd": tmp_path, "env": env}),
            (show, {"cwd": tmp_path}),
            (show, {"cwd": empty}),
        ]
    )
    seen = []
    for result in results:
        assert result.returncode == 0, result.stderr
        shown = json.loads(result.stdout)
        seen.append((shown["origin"], shown["settings"]["audit"]["concurrency"]))
    assert seen == [
        ("explicit.toml", 3),
        (str(tmp_path / "env.toml"), 5),
        ("audit-job.toml", 7),
        ("built-in defaults", "auto"),
    ]
    assert json.loads(results[3].stdout)["settings"]["database"]["url"] == (
        "sqlite+aiosqlite:///./audit.db"
    )


def test_config_show_masks_secrets_and_warns(tmp_path: Path) -> None:
    loose = tmp_path / "loose.toml"
    loose.write_text(
        f'[authing]\naccess_key_id = "key-id"\naccess_key_secret = "{SECRET}"\n'
        "verify_tls = false\n",
        encoding="utf-8",
    )
    loose.chmod(0o644)
    db_env = {"AUDIT_JOB_DATABASE_URL": f"postgresql://audit:{DB_PASSWORD}@db.internal/audit"}
    from_file, from_env = run_parallel(
        [
            (
                ["--verbose", "--config", "loose.toml", "config", "show"],
                {
                    "cwd": tmp_path,
                    "env": cli_env(**db_env),
                },
            ),
            (
                ["config", "show", "--format", "json"],
                {
                    "cwd": tmp_path,
                    "env": cli_env(AUTHING_ACCESS_KEY_SECRET=SECRET, **db_env),
                },
            ),
        ]
    )
    for result in (from_file, from_env):
        assert result.returncode == 0, result.stderr
        for stream in (result.stdout, result.stderr):
            assert SECRET not in stream
            assert DB_PASSWORD not in stream
    assert 'access_key_secret = "********"' in from_file.stdout
    assert 'url = "postgresql+asyncpg://audit:********@db.internal/audit"' in from_file.stdout
    assert 'access_key_id = "key-id"' in from_file.stdout  # the id is not a secret
    warnings = [line for line in from_file.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 2, from_file.stderr
    assert "loose.toml: holds the access key secret" in warnings[0]
    assert "chmod 600 loose.toml" in warnings[0]
    assert "verify_tls = false" in warnings[1]
    settings = json.loads(from_env.stdout)["settings"]
    assert settings["authing"]["access_key_secret"] == "********"
    assert settings["database"]["url"] == "postgresql+asyncpg://audit:********@db.internal/audit"
    assert from_env.stderr == ""  # no file, so nothing to warn about


# -- database URLs and schema ----------------------------------------------------------


def test_bad_database_urls_are_one_line(tmp_path: Path) -> None:
    cases = [
        (f"postgresql+asyncpg://postgres:{DB_PASSWORD}@127.0.0.1:1/audit", 1, "cannot connect"),
        (f"postgresql+asyncpgg://postgres:{DB_PASSWORD}@127.0.0.1/audit", 2, "[database] url"),
        (f"mysql+mysqldb://root:{DB_PASSWORD}@127.0.0.1/audit", 2, "unsupported driver"),
        (f"sqlite+aiosqlite:///{tmp_path}/no/such/folder/a.db", 1, "does not exist"),
    ]
    results = run_parallel(
        [
            (["targets", "count"], {"cwd": tmp_path, "env": cli_env(AUDIT_JOB_DATABASE_URL=url)})
            for url, _, _ in cases
        ]
    )
    for (url, code, words), result in zip(cases, results, strict=True):
        assert result.returncode == code, (url, result.stderr)
        line = one_line(result)
        assert words in line
        assert DB_PASSWORD not in line


def test_db_upgrade_current_then_import_on_a_fresh_database(
    empty_db_url: str, tmp_path: Path
) -> None:
    env = cli_env(AUDIT_JOB_DATABASE_URL=empty_db_url)
    head = migrate.head_revision()
    unmigrated_count, unmigrated_import = run_parallel(
        [
            (["targets", "count"], {"cwd": tmp_path, "env": env}),
            (
                ["targets", "import", "-"],
                {
                    "cwd": tmp_path,
                    "env": env,
                    "input": b"app_id,user_id\na,b\n",
                },
            ),
        ]
    )
    for result in (unmigrated_count, unmigrated_import):
        assert result.returncode == 1
        assert one_line(result).endswith("run: audit-job db upgrade")

    before = run_cli("db", "current", cwd=tmp_path, env=env)
    assert before.returncode == 0, before.stderr
    assert f"revision None (head {head}, needs: audit-job db upgrade)" in before.stdout
    upgraded = run_cli("db", "upgrade", cwd=tmp_path, env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"schema at revision {head} (was None)" in upgraded.stdout
    after, again = run_parallel(
        [
            (["db", "current"], {"cwd": tmp_path, "env": env}),
            (["db", "upgrade"], {"cwd": tmp_path, "env": env}),
        ]
    )
    assert f"revision {head} (head {head}, up to date)" in after.stdout
    assert f"schema at revision {head} (was {head})" in again.stdout

    csv_file = tmp_path / "t.csv"
    csv_file.write_text("app_id,user_id\napp1,user1\napp1,user2\n", encoding="utf-8")
    imported = run_cli("targets", "import", str(csv_file), cwd=tmp_path, env=env)
    assert imported.returncode == 0, imported.stderr
    assert "2 new" in imported.stdout

    async def tables() -> set[str]:
        engine = create_engine(empty_db_url)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    assert {"audit_target", "audit_run", "session_check", "session_state"} <= asyncio.run(tables())
    assert [(r[0], r[1], r[2]) for r in table_snapshot(empty_db_url)] == [
        ("app1", "user1", True),
        ("app1", "user2", True),
    ]


# -- targets -----------------------------------------------------------------------------


def bad_csv() -> tuple[bytes, list[str], list[tuple[str, str]]]:
    """A CSV mixing good and bad lines: (bytes, expected stderr lines, good pairs)."""
    lines = [
        b"\xef\xbb\xbfuser_id,extra,app_id,enabled",  # 1: BOM, swapped, extra column
        b"u1,x,a1,true",  # 2
        b",x,a1,",  # 3
        b"u3,x,",  # 4
        b"u4," + b"x" * 300 + b",a1",  # 5: a long extra cell is fine
        b"x" * 256 + b",x,a1",  # 6
        b"u\x1b7,x,a1",  # 7
        b"u8\x00,x,a1",  # 8
        b"u\xff9,x,a1",  # 9
        b"u10",  # 10
        b"u2,x,a1,false",  # 11
        b"u2,x,a1",  # 12: duplicate, no flag: keeps false
        b"u1,x,a1,true",  # 13: duplicate
        "ü".encode() * 255 + b",x,a2",  # 14: 255 multibyte characters
        b"z" * (10 * 1024 * 1024),  # 15: 10 MB, no newline at the end of the file
    ]
    data = b"\r\n".join(lines)
    errors = [
        "line 3: empty user_id",
        "line 4: empty app_id",
        "line 6: user_id longer than 255 characters (256)",
        "line 7: user_id contains a control character (U+001B)",
        "line 8: contains a NUL byte",
        "line 9: not valid UTF-8 (byte 2)",
        "line 10: missing column extra, app_id",
        "line 15: line longer than 4096 bytes",
    ]
    good = [("a1", "u1"), ("a1", "u2"), ("a1", "u4"), ("a2", "ü" * 255)]
    return data, errors, good


def test_import_reports_bad_lines_keeps_good_ones_and_is_idempotent(
    db_url: str, tmp_path: Path
) -> None:
    data, errors, good = bad_csv()
    path = tmp_path / "targets.csv"
    path.write_bytes(data)
    env = cli_env(AUDIT_JOB_DATABASE_URL=db_url)

    first = run_cli("targets", "import", str(path), cwd=tmp_path, env=env)
    assert first.returncode == 3, first.stderr
    assert first.stderr.splitlines() == [f"{path}: {e}" for e in errors]
    assert first.stdout.strip() == (
        f"imported 6 rows: 4 new, 2 already present or updated, {len(errors)} rejected; "
        "4 targets in all"
    )
    rows = table_snapshot(db_url)
    assert [(r[0], r[1]) for r in rows] == good
    assert {(r[0], r[1]): r[2] for r in rows}[("a1", "u2")] is False

    second = run_cli("targets", "import", str(path), cwd=tmp_path, env=env)
    assert second.returncode == 3
    assert second.stderr == first.stderr
    assert "0 new, 6 already present or updated" in second.stdout
    assert table_snapshot(db_url) == rows

    clean = b"app_id,user_id\r\na1,u1\r\na3,u5\r\n"
    piped = run_cli("targets", "import", "-", cwd=tmp_path, env=env, input=clean)
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""
    assert "imported 2 rows: 1 new, 1 already present or updated, 0 rejected" in piped.stdout
    assert len(table_snapshot(db_url)) == 5


def test_target_commands(db_url: str, tmp_path: Path) -> None:
    env = cli_env(AUDIT_JOB_DATABASE_URL=db_url)
    odd = "'; DROP TABLE audit_target; --"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=tmp_path, env=env)

    def together(*calls: Sequence[str]) -> list[subprocess.CompletedProcess[str]]:
        return run_parallel([(args, {"cwd": tmp_path, "env": env}) for args in calls])

    pairs = (("a1", "u1"), ("a1", "u2"), ("a%", odd), ("a_", "u1"))
    *added, bad = together(
        *(["targets", "add", a, u] for a, u in pairs), ["targets", "add", "a1", ""]
    )
    for (app, user), result in zip(pairs, added, strict=True):
        assert (result.returncode, result.stdout) == (0, f"added: {app} {user}\n"), result.stderr
    assert (bad.returncode, one_line(bad)) == (2, "empty user_id")

    disabled, disabled_odd = together(["targets", "disable", "a1"], ["targets", "disable", "a%"])
    assert disabled.stdout == "disabled 2 target(s)\n"
    assert disabled_odd.stdout == "disabled 1 target(s)\n"  # % is no wildcard
    enabled, again = together(["targets", "enable", "a1", "u2"], ["targets", "add", "a_", "u1"])
    assert enabled.stdout == "enabled 1 target(s)\n"
    assert again.stdout == "already present: a_ u1\n"

    listed_json, listed_csv, listed_table, counted = run_parallel(
        [
            (["targets", "list", "--format", "json"], {"cwd": tmp_path, "env": env}),
            (["targets", "list", "--app", "a1", "--format", "csv"], {"cwd": tmp_path, "env": env}),
            (["targets", "list", "--format", "table"], {"cwd": tmp_path, "env": env}),
            (["targets", "count", "--format", "json"], {"cwd": tmp_path, "env": env}),
        ]
    )
    records = [json.loads(line) for line in listed_json.stdout.splitlines()]
    assert [(r["app_id"], r["user_id"], r["enabled"]) for r in records] == [
        ("a%", odd, False),
        ("a1", "u1", False),
        ("a1", "u2", True),
        ("a_", "u1", True),
    ]
    assert all(r["created_at"].endswith("+00:00") for r in records)
    csv_lines = listed_csv.stdout.splitlines()
    assert csv_lines[0] == (
        "app_id,user_id,enabled,created_at,expect,effective_expect,severity,expect_source"
    )
    assert [",".join(line.split(",")[:3]) for line in csv_lines[1:]] == [
        "a1,u1,false",
        "a1,u2,true",
    ]
    assert all(line.endswith(",any,any,warning,default") for line in csv_lines[1:])
    assert odd in listed_table.stdout and "a_" in listed_table.stdout
    assert json.loads(counted.stdout) == {"targets": 4, "enabled": 2}

    removed = cli("targets", "remove", "a%", odd)
    assert (removed.returncode, removed.stdout) == (0, f"removed: a% {odd}\n")
    missing = cli("targets", "remove", "a%", odd)
    assert (missing.returncode, missing.stdout) == (3, f"not a target: a% {odd}\n")
    assert [(r[0], r[1]) for r in table_snapshot(db_url)] == [
        ("a1", "u1"),
        ("a1", "u2"),
        ("a_", "u1"),
    ]


def test_unreadable_import_file_is_a_usage_error(tmp_path: Path) -> None:
    results = run_parallel(
        [(["targets", "import", path], {"cwd": tmp_path}) for path in ("missing.csv", ".")]
    )
    for path, result in zip(("missing.csv", "."), results, strict=True):
        assert result.returncode == 2
        assert one_line(result).startswith(f"{path}: cannot read")
