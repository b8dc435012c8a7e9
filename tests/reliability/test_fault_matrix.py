"""Whole runs (snapshot -> claim -> check -> write -> finish) against a faulty emulator.

Each fault alone and all of them together, at high rates: every pair ends final and right
(the emulator's truth), no pair is asked more than `max_attempts` times, the configured rate
cap holds in every 1-second window the emulator saw, and the run's totals add up: rows,
`audit_run` counters, the summary and the emulator's own answer counts agree.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from relsupport import asked_per_pair, config_file, make_pairs, query, seed_targets, truth

from audit_job import config
from audit_job.commands import run as run_service
from audit_job.emulator import Emulator, EmulatorOptions
from audit_job.models import RunStatus

PAIRS = 200
RATE_CAP = 400.0
MAX_ATTEMPTS = 10
TIMEOUT_SECONDS = 1.5  # well under the 5 s hang; an answer late on a busy host is not abandoned

SCENARIOS: dict[str, dict[str, Any]] = {
    "5xx": {"fault_5xx": 0.25},
    "html_502": {"fault_html_502": 0.25},
    "hang_past_timeout": {"fault_hang": 0.1, "hang_seconds": 5.0},
    "reset": {"fault_reset": 0.25},
    "bad_json": {"fault_bad_json": 0.25},
    "busy": {"fault_busy": 0.25},
    "429_with_retry_after": {"rate": 150.0, "burst": 20.0, "retry_after": True},
    "429_without_retry_after": {"rate": 150.0, "burst": 20.0, "retry_after": False},
    "slow": {"delay_ms": 40.0, "jitter_ms": 120.0},
}
ALL_TOGETHER: dict[str, Any] = {
    "fault_5xx": 0.04,
    "fault_html_502": 0.04,
    "fault_hang": 0.03,
    "hang_seconds": 5.0,
    "fault_reset": 0.04,
    "fault_bad_json": 0.04,
    "fault_busy": 0.04,
    "rate": 250.0,
    "burst": 20.0,
    "delay_ms": 5.0,
    "jitter_ms": 30.0,
}


async def audited_run(
    tmp_path: Path, db_url: str, faults: dict[str, Any], auth: str = "signature"
) -> tuple[run_service.RunSummary, dict[str, Any], list[tuple[str, str]]]:
    pairs = make_pairs(PAIRS, missing_every=25)
    await seed_targets(db_url, pairs)
    async with Emulator(EmulatorOptions(seed=7, **faults)) as emu:
        path = config_file(
            tmp_path / "audit-job.toml",
            host=emu.url,
            db_url=db_url,
            auth=auth,
            authing={"timeout_seconds": TIMEOUT_SECONDS},
            audit={
                "concurrency": 32,
                "rate_per_second": RATE_CAP,
                "max_attempts": MAX_ATTEMPTS,
                "batch_size": 50,
            },
        )
        summary = await asyncio.wait_for(
            run_service.execute(config.load(str(path)), run_service.RunRequest(), asyncio.Event()),
            timeout=90,
        )
        stats = emu.stats()
    return summary, stats, pairs


async def assert_run_is_right(
    db_url: str, summary: run_service.RunSummary, stats: dict[str, Any], pairs: list
) -> None:
    rows = await query(
        db_url,
        "SELECT app_id, user_id, status, active, attempts, status_code, api_code "
        "FROM session_check WHERE run_id = :run",
        run=summary.run_id,
    )
    assert len(rows) == len(pairs) == len({(a, u) for a, u, *_ in rows})
    asked = asked_per_pair(stats)
    by_pair = {(a, u): rest for a, u, *rest in rows}
    for pair in pairs:
        status, active, attempts, status_code, api_code = by_pair[pair]
        expected = truth(*pair, seed=7)
        if expected is None:  # unknown user or app: a permanent error, asked once
            assert (status, active) == ("error", None), pair
            assert (status_code, api_code) in {(404, 2004), (499, 2011)}, pair
        else:
            assert status == ("active" if expected else "inactive"), (pair, by_pair[pair])
            assert bool(active) is expected, pair
        assert 1 <= attempts <= MAX_ATTEMPTS, pair
        # Every attempt reached the emulator, and nothing else did: per_pair is exact.
        assert asked[pair] == attempts, (pair, asked[pair], attempts)
    assert max(asked.values()) <= MAX_ATTEMPTS
    assert stats["max_per_second"] <= RATE_CAP, stats["max_per_second"]

    # Totals add up: rows, audit_run, summary and the emulator's answers.
    counts = {s: sum(1 for r in rows if r[2] == s) for s in ("active", "inactive", "error")}
    (run,) = await query(
        db_url,
        "SELECT status, total, active, inactive, failed, retries FROM audit_run WHERE id = :run",
        run=summary.run_id,
    )
    status, total, active, inactive, failed, retries = run
    assert status == RunStatus.COMPLETED_WITH_ERRORS.value == summary.status.value
    assert (total, active, inactive, failed) == (
        len(pairs),
        counts["active"],
        counts["inactive"],
        counts["error"],
    )
    assert summary.counts == {**counts, "pending": 0}
    assert retries == sum(r[4] for r in rows) - len(pairs) == summary.retries
    assert stats["answers"].get("active", 0) == counts["active"]
    assert stats["answers"].get("inactive", 0) == counts["inactive"]
    assert stats["check_requests"] == sum(asked.values())
    states = await query(db_url, "SELECT app_id, user_id, active FROM session_state")
    assert {(a, u): bool(x) for a, u, x in states} == {
        p: truth(*p, seed=7) for p in pairs if truth(*p, seed=7) is not None
    }


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_each_fault_alone(scenario: str, db_url: str, tmp_path: Path) -> None:
    summary, stats, pairs = await audited_run(tmp_path, db_url, SCENARIOS[scenario])
    await assert_run_is_right(db_url, summary, stats, pairs)
    if scenario.startswith("429"):
        assert stats["throttled"] > 0 and summary.throttled > 0
    elif scenario != "slow":
        assert sum(stats["faults"].values()) > 0


@pytest.mark.slow
@pytest.mark.parametrize("auth", ["signature", "token"])
async def test_all_faults_together(auth: str, db_url: str, tmp_path: Path) -> None:
    summary, stats, pairs = await audited_run(tmp_path, db_url, ALL_TOGETHER, auth)
    if auth == "token":  # token requests reach the emulator too, outside per_pair
        assert stats["token_requests"] >= 1
    await assert_run_is_right(db_url, summary, stats, pairs)
    assert stats["throttled"] > 0
    assert set(stats["faults"]) == {"5xx", "html_502", "hang", "reset", "bad_json", "busy"}
