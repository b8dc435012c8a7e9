"""Reporting services and the view, on SQLite and PostgreSQL, against real runs (see
reporting_scenario): every expectation is a SELECT of our own or the emulator's truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from reporting_scenario import Scenario, build_scenario, checks_by_pair, expected_changes
from sqlalchemy import func, inspect, select, text, update

from audit_job.commands import prune as prune_service
from audit_job.commands import report as service
from audit_job.config import DatabaseSettings, Settings
from audit_job.errors import ConfigError
from audit_job.html_report import render
from audit_job.store import migrate
from audit_job.store.engine import opened
from audit_job.store.reports import changes as store
from audit_job.store.tables import audit_run, audit_target, session_check, session_state

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def scenario(db_url: str, tmp_path: Path) -> Scenario:
    return await build_scenario(db_url, tmp_path)


def settings_for(url: str) -> Settings:
    return Settings(database=DatabaseSettings(url=url))


async def test_changes_follow_the_truth_and_the_rows(scenario: Scenario) -> None:
    first, second = scenario.run_ids
    before = await checks_by_pair(scenario.url, first)
    after = await checks_by_pair(scenario.url, second)
    async with opened(scenario.url) as engine:
        async with engine.connect() as conn:
            targets = {(r.app_id, r.user_id) for r in await conn.execute(select(audit_target))}
        got = {
            (row["app_id"], row["user_id"]): row["change"]
            async for row in store.stream_changes(engine, second, first, page=3)
        }
    assert got == expected_changes(before, after, targets)
    # And against what was arranged: the truth flipped exactly these pairs.
    assert {p for p, c in got.items() if "->" in c} == scenario.flipped
    assert {p for p, c in got.items() if c == "gone_from_targets"} == scenario.gone
    assert {p for p, c in got.items() if c == "newly_seen"} == {scenario.added}
    # The default base is the run before, skipping the skipped slot between them.
    settings = settings_for(scenario.url)
    assert await service.resolve_changes(settings, None, None) == (second, first)
    assert await service.resolve_changes(settings, str(second), str(first)) == (second, first)
    assert await service.resolve_changes(settings, "latest", "1900-01-01") == (second, None)


async def test_report_counts_match_a_group_by(scenario: Scenario) -> None:
    first, second = scenario.run_ids
    rep = await service.report(settings_for(scenario.url))
    assert (rep.run_id, rep.previous_run_id) == (second, first)
    async with opened(scenario.url) as engine, engine.connect() as conn:
        counts: dict[int, dict[str, dict[str, int]]] = {first: {}, second: {}}
        for run_id, app, status, n in await conn.execute(
            text(
                "SELECT run_id, app_id, status, COUNT(*) FROM session_check "
                "GROUP BY run_id, app_id, status"
            )
        ):
            counts[run_id].setdefault(app, {})[status] = n
    assert [row["app_id"] for row in rep.rows] == sorted(counts[second])
    for row in rep.rows:
        now, old = counts[second][row["app_id"]], counts[first][row["app_id"]]
        assert row["active"] == now.get("active", 0)
        assert row["inactive"] == now.get("inactive", 0)
        assert row["error"] == now.get("error", 0)
        assert row["total"] == sum(now.values())
        share = 100 * now.get("active", 0) / (now.get("active", 0) + now.get("inactive", 0))
        old_share = 100 * old.get("active", 0) / (old.get("active", 0) + old.get("inactive", 0))
        assert row["active_pct"] == pytest.approx(share, abs=0.05)
        assert row["previous_active_pct"] == pytest.approx(old_share, abs=0.05)
        assert row["active_change"] == now.get("active", 0) - old.get("active", 0)


async def test_history_marks_the_flip(scenario: Scenario) -> None:
    pair = sorted(scenario.flipped)[0]
    rows = [row async for row in service.history(settings_for(scenario.url), *pair)]
    assert [row["run_id"] for row in rows] == scenario.run_ids
    assert rows[0]["change"] == "first_seen"
    assert rows[1]["change"] == ("inactive->active" if rows[1]["active"] else "active->inactive")
    assert rows[0]["active"] is (not rows[1]["active"])
    steady = next(
        p
        for p in await checks_by_pair(scenario.url, scenario.run_ids[1])
        if p not in scenario.flipped and p not in scenario.errors and p != scenario.added
    )
    rows = [row async for row in service.history(settings_for(scenario.url), *steady)]
    assert [row["change"] for row in rows] == ["first_seen", ""]


async def test_results_filters_and_time_window(scenario: Scenario) -> None:
    settings = settings_for(scenario.url)
    second = scenario.run_ids[1]
    errors = [row async for row in service.results(settings, status="error")]
    assert {(r["app_id"], r["user_id"]) for r in errors} == scenario.errors
    assert {r["run_id"] for r in errors} == {second}
    everything = [
        row async for row in service.results(settings, since=datetime(2000, 1, 1, tzinfo=UTC))
    ]
    async with opened(scenario.url) as engine, engine.connect() as conn:
        total = (await conn.execute(select(func.count()).select_from(session_check))).scalar_one()
    assert len(everything) == total  # a window without --run spans every run
    none = [row async for row in service.results(settings, until=datetime(2000, 1, 1, tzinfo=UTC))]
    assert none == []


async def test_view_latest_session_state(scenario: Scenario) -> None:
    async with opened(scenario.url) as engine:
        async with engine.connect() as conn:
            view = {
                (r.app_id, r.user_id): (bool(r.active), r.run_id, r.target_enabled)
                for r in await conn.execute(text("SELECT * FROM latest_session_state"))
            }
            state = {
                (r.app_id, r.user_id): (r.active, r.run_id)
                for r in await conn.execute(select(session_state))
            }
        assert {pair: v[:2] for pair, v in view.items()} == state
        assert {pair for pair, v in view.items() if v[2] is None} == scenario.gone
        await migrate.downgrade(engine, "0002")
        async with engine.connect() as conn:
            assert "latest_session_state" not in await conn.run_sync(
                lambda sync: inspect(sync).get_view_names()
            )
        await migrate.upgrade(engine)
        async with engine.connect() as conn:
            assert "latest_session_state" in await conn.run_sync(
                lambda sync: inspect(sync).get_view_names()
            )


async def test_prune_keeps_the_latest_run_and_state(scenario: Scenario) -> None:
    first, second = scenario.run_ids
    async with opened(scenario.url) as engine:
        async with engine.begin() as conn:
            old = datetime.now(UTC) - timedelta(days=40)
            await conn.execute(update(audit_run).values(started_at=old))  # every run is old
            first_count = (
                await conn.execute(select(func.count()).where(session_check.c.run_id == first))
            ).scalar_one()
            state_before = (await conn.execute(select(session_state))).all()
        dry = await prune_service.prune(engine, 30, dry_run=True)
        assert (dry.checks, dry.runs) == (first_count, [first])
        assert len(await checks_by_pair(scenario.url, first)) == first_count
        done = await prune_service.prune(engine, 30, batch=7)  # several batches
        assert (done.checks, done.per_run) == (first_count, {first: first_count})
        async with engine.connect() as conn:
            assert await checks_by_pair(scenario.url, first) == {}
            assert len(await checks_by_pair(scenario.url, second)) > 0
            assert (await conn.execute(select(session_state))).all() == state_before
            assert (
                await conn.execute(select(func.count()).select_from(audit_run))
            ).scalar_one() == 3
        assert (await prune_service.prune(engine, 30)).checks == 0  # nothing left to do
        assert (await prune_service.prune(engine, 60)).checks == 0


async def test_html_report_draws_every_app(scenario: Scenario) -> None:
    data = await service.html_data(settings_for(scenario.url))
    page = render(data, UTC)
    assert page.count('class="series"') == 3
    assert page.count("<circle") == 6  # 3 apps x 2 runs
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert len(data.changes) == len(scenario.flipped) + len(scenario.gone)
    assert data.newly_seen == 1


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("2026-11-26", datetime(2026, 11, 26, tzinfo=UTC)),
        ("2026-11-26T09:00", datetime(2026, 11, 26, 9, tzinfo=UTC)),
        ("2026-11-26 09:00:00Z", datetime(2026, 11, 26, 9, tzinfo=UTC)),
        ("2026-11-26T10:00+01:00", datetime(2026, 11, 26, 9, tzinfo=UTC)),
        ("24h", datetime(2026, 11, 25, 12, tzinfo=UTC)),
        ("7d", datetime(2026, 11, 19, 12, tzinfo=UTC)),
        ("90m", datetime(2026, 11, 26, 10, 30, tzinfo=UTC)),
    ],
)
def test_parse_time(typed: str, expected: datetime) -> None:
    now = datetime(2026, 11, 26, 12, tzinfo=UTC)
    assert service.parse_time(typed, now) == expected


def test_parse_time_and_zone_reject_nonsense() -> None:
    with pytest.raises(ConfigError, match="--since: not a time, got 'yesterday'"):
        service.parse_time("yesterday", option="--since")
    with pytest.raises(ConfigError, match="unknown time zone"):
        service.parse_zone("Mars/Olympus")
