"""Audit runs in-process (`commands.run.execute`) against the emulator on loopback, on
SQLite and PostgreSQL: exactly right against the emulator's truth, under heavy faults,
narrowed by filters, and fed from an external `[source] query`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, text

from audit_job.commands import run as service
from audit_job.config import (
    AuditSettings,
    AuthingSettings,
    DatabaseSettings,
    LoadedConfig,
    Settings,
    SourceSettings,
)
from audit_job.emulator import PAIR_SEPARATOR, Emulator, EmulatorOptions, truth
from audit_job.models import RunStatus
from audit_job.store import targets as target_store
from audit_job.store.engine import opened
from audit_job.store.tables import audit_run, session_check, session_state

SEED = 11
Pair = tuple[str, str]


def sample_pairs(count: int, *, missing_every: int = 0) -> list[Pair]:
    """Real pairs over three apps; every `missing_every`-th has an unknown user, and
    two pairs sit in an app that does not exist."""
    pairs = []
    for n in range(count):
        user = f"user-{n:04d}"
        if missing_every and n % missing_every == missing_every - 1:
            user = f"missing-{n:04d}"
        pairs.append((("app-a", "app-b", "app-c")[n % 3], user))
    if missing_every:
        pairs += [("missing-app", "user-0000"), ("missing-app", "user-0001")]
    return pairs


async def seed_targets(url: str, pairs: list[Pair]) -> None:
    async with opened(url) as engine, engine.begin() as conn:
        await target_store.save_batch(conn, [(a, u, None) for a, u in pairs])


def config_for(
    url: str,
    emulator_url: str,
    *,
    secret: str = "sk-demo",
    timeout_seconds: float = 5,
    source: SourceSettings | None = None,
    **audit: Any,
) -> LoadedConfig:
    audit = {"concurrency": 16, "rate_per_second": 5000, "max_attempts": 4, **audit}
    settings = Settings(
        database=DatabaseSettings(url=url),
        authing=AuthingSettings(
            host=emulator_url,
            access_key_id="ak-demo",
            access_key_secret=SecretStr(secret),
            timeout_seconds=timeout_seconds,
        ),
        audit=AuditSettings(**audit),
        source=source or SourceSettings(),
    )
    return LoadedConfig(settings, "test", [])


async def run_once(loaded: LoadedConfig, **request: Any) -> service.RunSummary:
    return await service.execute(loaded, service.RunRequest(**request), asyncio.Event())


async def fetch(url: str, stmt: Any) -> list[Any]:
    async with opened(url) as engine, engine.connect() as conn:
        return list((await conn.execute(stmt)).all())


async def checks_of(url: str, run_id: int) -> dict[Pair, Any]:
    rows = await fetch(url, select(session_check).where(session_check.c.run_id == run_id))
    by_pair = {(r.app_id, r.user_id): r for r in rows}
    assert len(by_pair) == len(rows), "a pair has more than one row in the run"
    return by_pair


async def run_row(url: str, run_id: int) -> Any:
    (row,) = await fetch(url, select(audit_run).where(audit_run.c.id == run_id))
    return row


async def states(url: str) -> dict[Pair, Any]:
    return {(r.app_id, r.user_id): r for r in await fetch(url, select(session_state))}


def asked(emu: Emulator) -> dict[Pair, int]:
    counts = {}
    for key, n in emu.stats()["per_pair"].items():
        app, user = key.split(PAIR_SEPARATOR)
        counts[(app, user)] = n
    return counts


def assert_row_is_truth(pair: Pair, row: Any, expected: bool | None) -> None:
    if expected is None:
        assert row.status == "error", (pair, row)
        assert row.active is None
        if pair[0].startswith("missing-"):
            assert (row.status_code, row.api_code) == (499, 2011), row
        else:
            assert (row.status_code, row.api_code) == (404, 2004), row
        assert row.message and row.request_id, row
        assert row.http_status == 200  # the emulator's default error style: body
    else:
        assert row.status == ("active" if expected else "inactive"), (pair, row)
        assert row.active is expected
        assert row.request_id and row.checked_at is not None
        assert row.message is None


@pytest.mark.timeout(60)
async def test_clean_run_is_exactly_the_truth_and_state_moves_only_on_flips(
    db_url: str, tmp_path: Path
) -> None:
    pairs = sample_pairs(90, missing_every=9)
    await seed_targets(db_url, pairs)
    async with Emulator(EmulatorOptions(seed=SEED)) as emu:
        loaded = config_for(db_url, emu.url, batch_size=7)
        first = await run_once(loaded)

        expected = {p: truth(*p, SEED) for p in pairs}
        missing = [p for p, v in expected.items() if v is None]
        assert len(missing) == 12
        checks = await checks_of(db_url, first.run_id)
        assert set(checks) == set(pairs)
        for pair, row in checks.items():
            assert_row_is_truth(pair, row, expected[pair])
            assert row.attempts == 1
        assert asked(emu) == dict.fromkeys(pairs, 1)

        run = await run_row(db_url, first.run_id)
        n_active = sum(v is True for v in expected.values())
        n_inactive = sum(v is False for v in expected.values())
        assert run.status == RunStatus.COMPLETED_WITH_ERRORS == first.status
        assert (run.total, run.active, run.inactive, run.failed) == (
            len(pairs),
            n_active,
            n_inactive,
            len(missing),
        )
        assert run.total == run.active + run.inactive + run.failed
        assert run.retries == 0 and run.finished_at is not None and run.snapshot_at is not None
        assert first.counts == {
            "pending": 0,
            "active": n_active,
            "inactive": n_inactive,
            "error": len(missing),
        }

        before = await states(db_url)
        answered = {p for p, v in expected.items() if v is not None}
        assert set(before) == answered
        for pair, state in before.items():
            assert state.active is expected[pair]
            assert state.run_id == first.run_id
            assert state.changed_at == state.checked_at == checks[pair].checked_at

        # Second run: a truth file flips some sessions; the rest keep their hashed truth.
        flipped = sorted(answered)[::5]
        truth_file = tmp_path / "truth.csv"
        truth_file.write_text(
            "".join(f"{a},{u},{str(not expected[(a, u)]).lower()}\n" for a, u in flipped),
            encoding="utf-8",
        )
        emu.configure(truth_file=str(truth_file))
        second = await run_once(loaded)

    assert second.run_id != first.run_id
    checks2 = await checks_of(db_url, second.run_id)
    after = await states(db_url)
    assert set(after) == answered
    for pair in answered:
        now_active = not expected[pair] if pair in flipped else expected[pair]
        assert checks2[pair].active is now_active
        state, old = after[pair], before[pair]
        assert state.active is now_active
        assert state.run_id == second.run_id
        assert state.checked_at == checks2[pair].checked_at > old.checked_at
        if pair in flipped:
            assert state.changed_at == state.checked_at, pair
        else:
            assert state.changed_at == old.changed_at, pair


@pytest.mark.timeout(90)
async def test_heavy_faults_end_with_every_pair_final_and_right(db_url: str) -> None:
    pairs = sample_pairs(80, missing_every=10)
    await seed_targets(db_url, pairs)
    options = EmulatorOptions(
        seed=SEED,
        fault_5xx=0.10,
        fault_html_502=0.06,
        fault_reset=0.06,
        fault_bad_json=0.06,
        fault_busy=0.06,
        fault_hang=0.03,
        hang_seconds=30,
    )
    max_attempts = 4
    async with Emulator(options) as emu:
        loaded = config_for(
            db_url, emu.url, timeout_seconds=0.5, max_attempts=max_attempts, batch_size=10
        )
        summary = await run_once(loaded)
        seen = asked(emu)
        faults = emu.stats()["faults"]
    assert sum(faults.values()) > 0.2 * len(pairs), faults  # the faults really happened
    assert faults.get("hang", 0) > 0, faults

    checks = await checks_of(db_url, summary.run_id)
    assert set(checks) == set(pairs)
    exhausted = 0
    for pair, row in checks.items():
        assert row.status != "pending", pair
        assert 1 <= row.attempts <= max_attempts
        assert seen[pair] == row.attempts, (pair, row.attempts, seen[pair])
        expected = truth(*pair, SEED)
        if row.status == "error" and row.status_code not in (404, 499):
            # Not a "not found" answer: only an exhausted pair may end in error.
            assert row.attempts == max_attempts, row
            assert row.message, row
            exhausted += 1
        else:
            assert_row_is_truth(pair, row, expected)
    assert max(seen.values()) <= max_attempts
    run = await run_row(db_url, summary.run_id)
    assert run.retries == sum(r.attempts - 1 for r in checks.values()) > 0
    assert run.failed == sum(r.status == "error" for r in checks.values())
    assert run.total == len(pairs)
    assert run.status == "completed_with_errors"


@pytest.mark.timeout(60)
async def test_filters_narrow_the_snapshot(db_url: str) -> None:
    pairs = sample_pairs(30)
    await seed_targets(db_url, pairs)
    async with opened(db_url) as engine, engine.begin() as conn:
        await target_store.set_enabled(conn, "app-b", "user-0001", False)
    async with Emulator(EmulatorOptions(seed=SEED)) as emu:
        loaded = config_for(db_url, emu.url)
        by_app = await run_once(loaded, app_id="app-b")
        assert asked(emu) == {p: 1 for p in pairs if p[0] == "app-b" and p[1] != "user-0001"}
        emu.reset_stats()
        by_user = await run_once(loaded, user_id="user-0004")
        by_both = await run_once(loaded, app_id="app-c", user_id="user-0005")
        none = await run_once(loaded, app_id="app-c", user_id="user-0004")
        assert asked(emu) == {("app-b", "user-0004"): 1, ("app-c", "user-0005"): 1}

    app_b = await checks_of(db_url, by_app.run_id)
    assert set(app_b) == {p for p in pairs if p[0] == "app-b"} - {("app-b", "user-0001")}
    assert set(await checks_of(db_url, by_user.run_id)) == {("app-b", "user-0004")}
    assert set(await checks_of(db_url, by_both.run_id)) == {("app-c", "user-0005")}
    assert await checks_of(db_url, none.run_id) == {}
    assert none.status is RunStatus.SUCCEEDED and none.total == 0
    assert (await run_row(db_url, by_app.run_id)).filters == '{"app": "app-b"}'


async def make_source(backend: str, db_url: str, tmp_path: Path) -> SourceSettings:
    """A table of pairs outside audit_target: a second SQLite file, or a table in the
    PostgreSQL database itself (`[source] url` left unset). Bad rows included."""
    rows = [
        ("src-a", "u1"),
        ("src-a", "u2"),
        ("src-b", "u1"),
        ("src-b", "missing-u9"),
        ("", "u3"),  # empty app id
        ("src-a", None),  # NULL user id
        ("src-a", "x" * 300),  # too long
        ("src-b", "bad\x07id"),  # control character
        ("src-a", "u1"),  # a duplicate: one row in the snapshot
    ]
    url = f"sqlite+aiosqlite:///{tmp_path}/source.db" if backend == "sqlite" else db_url
    async with opened(url) as engine, engine.begin() as conn:
        await conn.execute(text("CREATE TABLE people (uid TEXT, app TEXT, note TEXT)"))
        await conn.execute(
            text("INSERT INTO people (uid, app, note) VALUES (:u, :a, 'x')"),
            [{"u": u, "a": a} for a, u in rows],
        )
    return SourceSettings(
        url=url if backend == "sqlite" else None,
        query="SELECT app AS app_id, uid AS user_id FROM people",
    )


@pytest.mark.timeout(60)
async def test_external_source_query_feeds_the_snapshot_and_skips_bad_rows(
    backend: str, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await seed_targets(db_url, [("target-app", "not-in-source")])
    source = await make_source(backend, db_url, tmp_path)
    good = {("src-a", "u1"), ("src-a", "u2"), ("src-b", "u1"), ("src-b", "missing-u9")}
    async with Emulator(EmulatorOptions(seed=SEED)) as emu:
        loaded = config_for(db_url, emu.url, source=source)
        plan = await service.plan(loaded, None, None)
        assert plan["pairs"] == 5  # the duplicate counts here; the snapshot keeps one
        summary = await run_once(loaded)
        narrowed = await run_once(loaded, app_id="src-b")
        assert set(asked(emu)) == good
    checks = await checks_of(db_url, summary.run_id)
    assert set(checks) == good
    for pair, row in checks.items():
        assert_row_is_truth(pair, row, truth(*pair, SEED))
    assert summary.status is RunStatus.COMPLETED_WITH_ERRORS
    assert (await run_row(db_url, summary.run_id)).total == 4
    assert set(await checks_of(db_url, narrowed.run_id)) == {
        ("src-b", "u1"),
        ("src-b", "missing-u9"),
    }
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert any("empty app_id" in m for m in skipped), skipped
    assert any("4 rows skipped" in m for m in skipped), skipped


async def pairs_in_run(conn: Any, run_id: int) -> set[Pair]:
    rows = await conn.execute(
        select(session_check.c.app_id, session_check.c.user_id).where(
            session_check.c.run_id == run_id
        )
    )
    return {(row.app_id, row.user_id) for row in rows}


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.pg)])
async def test_snapshot_shares_are_disjoint_and_cover_every_target(db_url: str) -> None:
    # PostgreSQL takes a snapshot in two connections, one hash share each.
    from audit_job.store import runs as run_store
    from audit_job.store import snapshot as snapshot_store

    pairs = sample_pairs(500)
    await seed_targets(db_url, pairs)
    parts = service.SNAPSHOT_PARTS
    taken: list[set[Pair]] = []
    async with opened(db_url) as engine:
        async with engine.begin() as conn:
            run_id = await run_store.create_run(conn, trigger="manual")
        for index in range(parts):
            async with engine.begin() as conn:
                before = await pairs_in_run(conn, run_id)
                await snapshot_store.snapshot_targets(conn, run_id, None, None, (index, parts))
                taken.append(await pairs_in_run(conn, run_id) - before)
    assert all(taken), "every share holds some pairs"
    assert sum(len(share) for share in taken) == len(pairs)
    assert set().union(*taken) == set(pairs)
