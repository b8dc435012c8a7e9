"""Runs on the adaptive defaults against the emulator on loopback, on the three backends:
`concurrency = "auto"` bounded by max_concurrency, a pinned integer holding, the learned rate
kept after a run the server bounded and used by the next one (or not, when told not to),
and never the secret in the learned_rate table."""

from __future__ import annotations

from sqlalchemy import select
from test_run import checks_of, config_for, run_once, sample_pairs, seed_targets

from audit_job.emulator import Emulator, EmulatorOptions, truth
from audit_job.models import RunStatus
from audit_job.store.engine import opened
from audit_job.store.reports.listing import recent_runs
from audit_job.store.tables import learned_rate

SEED = 5


async def learned_rows(url: str) -> list[dict[str, object]]:
    async with opened(url) as engine, engine.connect() as conn:
        rows = (await conn.execute(select(learned_rate))).mappings().all()
    return [dict(row) for row in rows]


async def test_a_run_the_server_bounds_leaves_a_learned_rate_the_next_run_starts_at(
    db_url: str,
) -> None:
    pairs = sample_pairs(450)
    await seed_targets(db_url, pairs)
    # The server allows 100/s with a bucket of 10; the tool is told 400/s.
    async with Emulator(EmulatorOptions(seed=SEED, rate=100, burst=10)) as emu:
        loaded = config_for(db_url, emu.url, concurrency="auto", rate_per_second=400)
        first = await run_once(loaded)
        assert first.status is RunStatus.SUCCEEDED
        assert first.pacing is not None and first.pacing.concurrency == "auto"
        assert first.pacing.learned_rate is None  # nothing learned before it
        assert 1 <= first.pacing.concurrency_peak <= 256
        assert first.throttled > 0  # it found the limit by its 429s
        assert emu.stats()["max_per_second"] <= 400  # never above the cap in any second

        rows = await learned_rows(db_url)
        assert len(rows) == 1
        row = rows[0]
        assert row["server_bounded"] is True or row["server_bounded"] == 1
        assert 50 <= row["rate_per_second"] < 400
        assert row["configured_rate_per_second"] == 400
        assert row["access_key_id"] == "ak-demo"
        assert "sk-demo" not in repr(row)  # the secret config_for gives

        second = await run_once(loaded)
        assert second.status is RunStatus.SUCCEEDED
        assert second.pacing is not None
        assert second.pacing.learned_rate == row["rate_per_second"]

        third = await run_once(loaded, use_learned_rate=False)  # --no-learned-rate
        assert third.pacing is not None and third.pacing.learned_rate is None

    async with opened(db_url) as engine, engine.connect() as conn:
        listed = {row["id"]: row for row in await recent_runs(conn, 10)}
    assert listed[first.run_id]["learned_rate_per_second"] is None
    assert listed[second.run_id]["learned_rate_per_second"] == round(row["rate_per_second"], 1)
    assert listed[third.run_id]["learned_rate_per_second"] is None

    for run in (first, second, third):
        checks = await checks_of(db_url, run.run_id)
        assert {p: c.active for p, c in checks.items()} == {p: truth(*p, SEED) for p in pairs}


async def test_a_learning_under_another_cap_is_not_used(db_url: str) -> None:
    pairs = sample_pairs(300)
    await seed_targets(db_url, pairs)
    async with Emulator(EmulatorOptions(seed=SEED, rate=100, burst=10)) as emu:
        await run_once(config_for(db_url, emu.url, concurrency="auto", rate_per_second=400))
        assert len(await learned_rows(db_url)) == 1
        other = await run_once(config_for(db_url, emu.url, concurrency="auto", rate_per_second=300))
    assert other.pacing is not None and other.pacing.learned_rate is None


async def test_a_pinned_concurrency_holds(db_url: str) -> None:
    pairs = sample_pairs(120)
    await seed_targets(db_url, pairs)
    async with Emulator(EmulatorOptions(seed=SEED, delay_ms=5)) as emu:
        summary = await run_once(config_for(db_url, emu.url, concurrency=3))
        assert emu.stats()["max_in_flight"] <= 3
    assert summary.status is RunStatus.SUCCEEDED
    assert summary.pacing is not None
    assert summary.pacing.concurrency == "3"
    assert summary.pacing.concurrency_limit == 3
    assert 1 <= summary.pacing.concurrency_peak <= 3
    # A run that never reached its cap for long leaves nothing to learn.
    assert await learned_rows(db_url) == []


async def test_auto_concurrency_is_bounded_by_max_concurrency(db_url: str) -> None:
    pairs = sample_pairs(200)
    await seed_targets(db_url, pairs)
    # 100 ms answers at up to 5,000/s would need 550 in flight: max_concurrency holds it at 8.
    async with Emulator(EmulatorOptions(seed=SEED, delay_ms=100)) as emu:
        summary = await run_once(config_for(db_url, emu.url, concurrency="auto", max_concurrency=8))
        assert emu.stats()["max_in_flight"] <= 8
    assert summary.status is RunStatus.SUCCEEDED
    assert summary.pacing is not None and summary.pacing.concurrency_peak <= 8


async def test_rate_limit_headers_pace_a_run_below_the_servers_limit(db_url: str) -> None:
    """The server says its budget (100/s, a bucket of 10) in RateLimit headers; told 400/s,
    the run paces by them instead of finding the limit by its 429s (which a run without the
    headers needs: the rate steps only after 3 throttles and 2 % of the rate, 8, in a
    second). Learning is off so that each run starts from the cap."""
    pairs = sample_pairs(300)
    await seed_targets(db_url, pairs)
    throttled = {}
    for style in ("ietf", "off"):
        options = EmulatorOptions(seed=SEED, rate=100, burst=10, rate_limit_headers=style)
        async with Emulator(options) as emu:
            loaded = config_for(db_url, emu.url, concurrency="auto", rate_per_second=400)
            run = await run_once(loaded, use_learned_rate=False)
            assert run.status is RunStatus.SUCCEEDED
            throttled[style] = run.throttled
            checks = await checks_of(db_url, run.run_id)
            assert {p: c.active for p, c in checks.items()} == {p: truth(*p, SEED) for p in pairs}
    # Without the headers at least 8 (the first step's); with them fewer, and usually none
    # (a stalled loaded host can still send a few at the cap before the first answer).
    assert throttled["off"] >= 8
    assert throttled["ietf"] < throttled["off"]
