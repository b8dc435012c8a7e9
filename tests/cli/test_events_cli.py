"""The event feed, expectations and violations through real `audit-job` subprocesses on
SQLite: bad input (one line, the right exit code, nothing written), `targets expect` and
the CSV's expect column, `violations`, `events` listing and `--follow`, `events sinks`,
`events retry`, SIGKILL in the middle of `events deliver`, and secrets kept out of every
output, log and the database file."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import cli_env, run_cli
from receiver import ReceiverThread, new_secret

from audit_job.models import EventType
from audit_job.store import events, migrate, outbox
from audit_job.store.engine import create_engine
from audit_job.store.violations import JudgedAnswer

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def setup_db(folder: Path) -> str:
    url = f"sqlite+aiosqlite:///{folder}/audit.db"

    async def upgrade() -> None:
        engine = create_engine(url)
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(upgrade())
    return url


def append_events(url: str, count: int, start: int = 0) -> None:
    kinds = [EventType.RUN_FINISHED, EventType.VIOLATION_OPENED, EventType.SLOT_MISSED]

    async def go() -> None:
        engine = create_engine(url)
        try:
            for first in range(start, start + count, 500):
                async with engine.begin() as conn:
                    await events.append(
                        conn,
                        [
                            events.NewEvent(kinds[i % 3].value, i, "app", f"u{i}", {"n": i})
                            for i in range(first, min(first + 500, start + count))
                        ],
                    )
        finally:
            await engine.dispose()

    asyncio.run(go())


def table_ids(url: str) -> list[int]:
    async def go() -> list[int]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return [r.id for r in await events.read_after(conn, 0, limit=1_000_000)]
        finally:
            await engine.dispose()

    return asyncio.run(go())


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def sink_block(name: str, url: str, **extra: Any) -> str:
    lines = [
        "[[sink]]",
        f'name = "{name}"',
        'type = "webhook"',
        f'url = "{url}"',
        f'secret_env = "SECRET_{name.upper()}"',
        "timeout_seconds = 2",
        "max_attempts = 2",
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "words"),
    [
        (
            '[[sink]]\nname = "a"\ntype = "smtp"\n',
            '[[sink]] #1 type: must be "webhook" or "jsonl", got "smtp" (line 3)',
        ),
        (
            '[[sink]]\nname = "a"\ntype = "webhook"\n'
            'url = "ftp://bob:PW123@host/x?token=TOK123"\nsecret_env = "S"\n',
            "[[sink]] #1 url: must be an http:// or https:// URL naming a host, "
            'got "ftp://********@host/x?token=********" (line 4)',
        ),
        (
            '[[sink]]\nname = "a"\ntype = "jsonl"\npath = "a"\n'
            '[[sink]]\nname = "a"\ntype = "jsonl"\npath = "b"\n',
            "[[sink]] #2 name: name 'a' is already used by [[sink]] #1 (line 6)",
        ),
        (
            '[[policy]]\napps = "payroll"\nexpect = "inactve"\n',
            '[[policy]] #1 expect: must be one of "any", "active", "inactive", '
            'got "inactve" (line 3)',
        ),
        (
            '[[policy]]\nexpect = "active"\nseverity = "urgent"\n',
            '[[policy]] #1 severity: must be one of "info", "warning", "critical", '
            'got "urgent" (line 3)',
        ),
        (
            '[[sink]]\nname = "a"\ntype = "jsonl"\npath = "a"\ntypes = ["violaton.*"]\n',
            "'violaton.*' matches no event type",
        ),
    ],
)
def test_configuration_mistakes_are_one_line_and_exit_2(
    tmp_path: Path, block: str, words: str
) -> None:
    config = write_toml(tmp_path / "bad.toml", block)
    result = run_cli("--config", str(config), "config", "show", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert line == f"{config}: {words}" or words in line
    assert "PW123" not in result.stderr and "TOK123" not in result.stderr


def test_a_missing_or_bad_signing_secret_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = setup_db(tmp_path)
    config = write_toml(
        tmp_path / "c.toml",
        f'[database]\nurl = "{url}"\n' + sink_block("siem", "http://127.0.0.1:9/x"),
    )
    for env, words in (
        (cli_env(), "[[sink]] siem: secret_env SECRET_SIEM: the environment variable is not set"),
        (cli_env(SECRET_SIEM=" "), "the environment variable is empty"),
        (cli_env(SECRET_SIEM="whsec_c2hvcnQ="), "holds a 5-byte key"),
    ):
        result = run_cli("--config", str(config), "events", "deliver", cwd=tmp_path, env=env)
        assert result.returncode == 2, result.stderr
        assert words in one_line(result)
        assert "c2hvcnQ" not in result.stderr


def test_import_with_an_expect_column_rejects_bad_cells_and_keeps_the_rest(tmp_path: Path) -> None:
    url = setup_db(tmp_path)
    env = cli_env(AUDIT_JOB_DATABASE_URL=url)
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text(
        "app_id,user_id,expect\npayroll,alice,inactive\npayroll,bob,sometimes\npayroll,carol,\nhr,dave,ACTIVE\n",
        encoding="utf-8",
    )
    result = run_cli("targets", "import", str(csv_file), cwd=tmp_path, env=env)
    assert result.returncode == 3, result.stderr
    assert one_line(result) == (
        f"{csv_file}: line 3: expect must be any, active or inactive, got 'sometimes'"
    )
    listed = run_cli("targets", "list", "--format", "json", cwd=tmp_path, env=env)
    rows = {r["user_id"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert {u: r["expect"] for u, r in rows.items()} == {
        "alice": "inactive",
        "carol": "any",
        "dave": "active",
    }
    # an empty cell leaves the pair's expectation as it is
    csv_file.write_text("app_id,user_id,expect\npayroll,alice,\n", encoding="utf-8")
    assert run_cli("targets", "import", str(csv_file), cwd=tmp_path, env=env).returncode == 0
    listed = run_cli(
        "targets", "list", "--user", "alice", "--format", "json", cwd=tmp_path, env=env
    )
    assert json.loads(listed.stdout)["expect"] == "inactive"


def test_targets_expect_and_the_effective_expectation(tmp_path: Path) -> None:
    url = setup_db(tmp_path)
    config = write_toml(
        tmp_path / "c.toml",
        f'[database]\nurl = "{url}"\n'
        '[[policy]]\nname = "offboarded"\napps = ["payroll", "hr-*"]\nusers = "contractor-*"\n'
        'expect = "inactive"\nseverity = "critical"\n'
        '[[policy]]\nname = "typo"\nusers = "contrator-*"\nexpect = "inactive"\n',
    )
    base = ["--config", str(config)]
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text(
        "app_id,user_id\npayroll,contractor-1\npayroll,alice\nhr-portal,contractor-2\ncrm,bob\n",
        encoding="utf-8",
    )
    assert run_cli(*base, "targets", "import", str(csv_file), cwd=tmp_path).returncode == 0
    done = run_cli(*base, "targets", "expect", "payroll", "alice", "active", cwd=tmp_path)
    assert done.returncode == 0 and "expect active: 1 target(s)" in done.stdout
    done = run_cli(*base, "targets", "expect", "--app", "crm", "inactive", cwd=tmp_path)
    assert done.returncode == 0 and "1 target(s)" in done.stdout
    missing = run_cli(*base, "targets", "expect", "payroll", "nobody", "active", cwd=tmp_path)
    assert missing.returncode == 3 and "not a target: payroll nobody" in missing.stderr
    bad = run_cli(*base, "targets", "expect", "payroll", "alice", "maybe", cwd=tmp_path)
    assert (
        bad.returncode == 2
        and one_line(bad) == "expect must be any, active or inactive, got 'maybe'"
    )
    listed = run_cli(*base, "targets", "list", "--format", "json", cwd=tmp_path)
    rows = {(r["app_id"], r["user_id"]): r for r in map(json.loads, listed.stdout.splitlines())}
    assert rows[("payroll", "contractor-1")]["effective_expect"] == "inactive"
    assert rows[("payroll", "contractor-1")]["expect_source"] == "policy offboarded"
    assert rows[("hr-portal", "contractor-2")]["severity"] == "critical"
    assert (
        rows[("payroll", "alice")]["expect"],
        rows[("payroll", "alice")]["effective_expect"],
    ) == ("active", "active")
    assert rows[("crm", "bob")]["expect_source"] == "target"
    shown = run_cli(*base, "config", "show", cwd=tmp_path)
    assert shown.returncode == 0
    assert '[[policy]]\nname = "offboarded"' in shown.stdout
    assert "[[policy]] typo users: 'contrator-*' matches no target" in shown.stderr
    assert "offboarded" not in shown.stderr  # its patterns all match something


# --- violations and the listing ---------------------------------------------------------------


def seed_violations(url: str) -> None:
    async def go() -> None:
        engine = create_engine(url)
        try:
            for run, (active, hours) in enumerate([(True, 0), (False, 1)], start=1):
                async with engine.begin() as conn:
                    await outbox.record_answers(
                        conn,
                        [
                            JudgedAnswer(
                                "payroll",
                                "u1",
                                active,
                                T0.replace(hour=9 + hours),
                                run,
                                "inactive",
                                "critical",
                                "policy p",
                            ),
                            JudgedAnswer(
                                "payroll",
                                "u2",
                                True,
                                T0.replace(hour=9 + hours),
                                run,
                                "inactive",
                                "info",
                                "target",
                            ),
                            JudgedAnswer(
                                "crm",
                                "u3",
                                False,
                                T0.replace(hour=9 + hours),
                                run,
                                "active",
                                "warning",
                                "target",
                            ),
                        ],
                    )
        finally:
            await engine.dispose()

    asyncio.run(go())


def test_violations_listing_filters_and_formats(tmp_path: Path) -> None:
    url = setup_db(tmp_path)
    seed_violations(url)
    env = cli_env(AUDIT_JOB_DATABASE_URL=url)

    def rows(*args: str) -> list[dict[str, Any]]:
        result = run_cli("violations", *args, "--format", "json", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    everything = rows()
    # newest first; one batch opens its violations in pair order (crm before payroll)
    assert [(r["user_id"], r["resolved_at"] is None) for r in everything] == [
        ("u2", True),
        ("u1", False),
        ("u3", True),
    ]
    assert {r["user_id"] for r in rows("--open")} == {"u2", "u3"}
    assert {r["user_id"] for r in rows("--app", "payroll")} == {"u1", "u2"}
    assert {r["user_id"] for r in rows("--severity", "warning")} == {"u1", "u3"}
    assert rows("--since", "2026-12-02") == []
    assert len(rows("--since", "2026-12-01T08:00")) == 3
    as_csv = run_cli("violations", "--open", "--format", "csv", cwd=tmp_path, env=env)
    assert as_csv.stdout.splitlines()[0].startswith("id,app_id,user_id,expected,observed,severity")
    bad = run_cli("violations", "--severity", "loud", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "--severity: one of info, warning, critical" in one_line(bad)


def test_events_listing_types_since_and_follow(tmp_path: Path) -> None:
    url = setup_db(tmp_path)
    seed_violations(url)
    env = cli_env(AUDIT_JOB_DATABASE_URL=url)
    listed = run_cli("events", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    feed = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [e["type"] for e in feed] == [
        "violation.opened",
        "violation.opened",
        "violation.opened",
        "violation.resolved",
    ]
    assert list(feed[0]) == ["id", "type", "created_at", "run_id", "app_id", "user_id", "data"]
    only = run_cli(
        "events", "--type", "violation.res*", "--type", "session.*", cwd=tmp_path, env=env
    )
    assert [json.loads(line)["type"] for line in only.stdout.splitlines()] == [
        "violation.resolved",
    ]
    after = run_cli("events", "--since", str(feed[1]["id"]), cwd=tmp_path, env=env)
    assert [json.loads(line)["id"] for line in after.stdout.splitlines()] == [
        feed[2]["id"],
        feed[3]["id"],
    ]
    bad = run_cli("events", "--type", "violations", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "--type: 'violations' matches no event type" in one_line(bad)
    follower = subprocess.Popen(
        [sys.executable, "-m", "audit_job", "events", "--follow", "--since", str(feed[-1]["id"])],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)
        append_events(url, 2, start=100)
        assert follower.stdout is not None
        got = [json.loads(follower.stdout.readline()) for _ in range(2)]
        assert [e["run_id"] for e in got] == [100, 101]
    finally:
        follower.send_signal(signal.SIGINT)
        follower.communicate(timeout=10)


# --- delivery ---------------------------------------------------------------------------------


def test_sigkill_in_the_middle_of_delivery_loses_nothing(tmp_path: Path) -> None:
    """`events deliver` killed twice mid-delivery, then run to the end: every event
    received at least once, none invented, in id order, and the only repeats are the
    batch each kill left unrecorded; the jsonl file holds each event once."""
    url = setup_db(tmp_path)
    append_events(url, 1500)
    secret = new_secret()
    with ReceiverThread(secret, delay_seconds=0.02) as receiver:
        path = tmp_path / "feed.jsonl"
        config = write_toml(
            tmp_path / "c.toml",
            f'[database]\nurl = "{url}"\n'
            + sink_block("siem", receiver.url, batch_size=20)
            + f'[[sink]]\nname = "file"\ntype = "jsonl"\npath = "{path}"\nbatch_size = 7\n',
        )
        env = cli_env(SECRET_SIEM=secret)
        command = [sys.executable, "-m", "audit_job", "--config", str(config), "events", "deliver"]
        for kill_after in (15, 35):
            process = subprocess.Popen(
                command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            deadline = time.monotonic() + 60
            while len(receiver.acknowledged()) < kill_after and time.monotonic() < deadline:
                time.sleep(0.005)
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=10)
            assert process.returncode == -signal.SIGKILL
        finished = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert finished.returncode == 0, finished.stderr
        assert "siem: delivered" in finished.stdout and "0 pending" in finished.stdout
        expected = table_ids(url)
        assert receiver.all_verified()
        acknowledged = receiver.acknowledged()
        got = receiver.acknowledged_ids()
        assert set(got) == set(expected) and set(got) <= set(expected)
        # in id order: each batch ascending, and every batch starts after the previous one,
        # except a batch sent again after a kill, which repeats an earlier one exactly
        repeats = 0
        seen: dict[str | None, list[int]] = {}
        last = 0
        for request in acknowledged:
            assert request.ids == sorted(request.ids)
            if request.message_id in seen:
                assert seen[request.message_id] == request.ids
                repeats += 1
                continue
            assert request.ids[0] > last
            last = request.ids[-1]
            seen[request.message_id] = request.ids
        assert repeats <= 2
        assert len(got) - len(expected) == sum(len(r.ids) for r in acknowledged) - len(expected)
        lines = [json.loads(line)["id"] for line in path.read_text().splitlines()]
        assert lines == expected


def test_sinks_status_and_retry_from_the_cli(tmp_path: Path) -> None:
    url = setup_db(tmp_path)
    append_events(url, 5)
    secret = new_secret()
    with ReceiverThread(secret) as receiver:
        receiver.mode = "400"
        config = write_toml(
            tmp_path / "c.toml", f'[database]\nurl = "{url}"\n' + sink_block("siem", receiver.url)
        )
        env = cli_env(SECRET_SIEM=secret)
        base = ["--config", str(config)]
        failed = run_cli(*base, "events", "deliver", cwd=tmp_path, env=env)
        assert failed.returncode == 3
        assert "siem: failing (HTTP 400: rejected batch for ?)" in failed.stdout
        assert "audit-job events retry siem" in failed.stdout
        status = run_cli(*base, "events", "sinks", "--format", "json", cwd=tmp_path, env=env)
        (row,) = [json.loads(line) for line in status.stdout.splitlines()]
        assert (row["failing"], row["pending"], row["cursor"], row["failures"]) == (True, 5, 0, 1)
        unknown = run_cli(*base, "events", "retry", "nope", cwd=tmp_path, env=env)
        assert unknown.returncode == 1 and "no sink named 'nope'" in one_line(unknown)
        receiver.mode = "ok"
        retried = run_cli(*base, "events", "retry", "siem", cwd=tmp_path, env=env)
        assert retried.returncode == 0, retried.stderr
        delivered = run_cli(*base, "events", "deliver", cwd=tmp_path, env=env)
        assert delivered.returncode == 0 and "siem: delivered 5 events" in delivered.stdout
        assert receiver.acknowledged_ids() == table_ids(url)


def test_secrets_stay_out_of_outputs_logs_and_the_database(tmp_path: Path) -> None:
    """A webhook URL with user info and a query token, a signing secret, a receiver that
    echoes the query back in its refusal: none of them in any output, log or the
    database file."""
    url = setup_db(tmp_path)
    seed_violations(url)
    secret = new_secret()
    token, password = "TOKENq8Zr4", "PASSWm3Xk9"
    with ReceiverThread(secret) as receiver:
        hook = f"http://hookuser:{password}@127.0.0.1:{receiver.port}/hooks?token={token}&v=1"
        config = write_toml(
            tmp_path / "c.toml", f'[database]\nurl = "{url}"\n' + sink_block("siem", hook)
        )
        env = cli_env(SECRET_SIEM=secret)
        outputs = []
        receiver.mode = "400"
        for n, command in enumerate(
            [
                ["config", "show"],
                ["config", "show", "--format", "json"],
                ["events", "deliver"],
                ["events", "sinks", "--format", "json"],
                ["events", "sinks", "--format", "table"],
                ["events"],
                ["events", "retry", "siem"],
                ["violations"],
            ]
        ):
            log = tmp_path / f"log-{n}.txt"
            result = run_cli(
                "--verbose",
                "--log-file",
                str(log),
                "--config",
                str(config),
                *command,
                cwd=tmp_path,
                env=env,
            )
            outputs += [result.stdout, result.stderr, log.read_text() if log.exists() else ""]
        receiver.mode = "hang"  # a timeout's message names the URL nowhere either
        receiver.hang_seconds = 5
        result = run_cli(
            "--verbose",
            "--config",
            str(config),
            "events",
            "deliver",
            cwd=tmp_path,
            env=env,
            timeout=60,
        )
        outputs += [result.stdout, result.stderr]
        assert receiver.requests and token in receiver.requests[0].query  # the token was used
    joined = "\n".join(outputs)
    assert "hooks?token=********" in joined  # the masked URL is what is shown
    database = (tmp_path / "audit.db").read_bytes()
    for wal in tmp_path.glob("audit.db-*"):
        database += wal.read_bytes()
    key_text = secret.removeprefix("whsec_")
    for value in (token, password, secret, key_text, key_text.rstrip("=")):
        assert value not in joined, value
        assert value.encode() not in database, value
