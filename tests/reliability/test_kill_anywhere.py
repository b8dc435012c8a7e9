"""SIGKILL a real `audit-job run` at random moments, resume, repeat; then check the record.

Wherever the kill lands (start-up, snapshot, mid-batch, between a request and its write,
during the final flush), after the last resume: exactly one final row per pair, no pair left
pending, one run, and `active` identical both to the emulator's truth and to an
uninterrupted run against the same truth. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
from pathlib import Path

import pytest
from relsupport import (
    EmulatorThread,
    Processes,
    config_file,
    make_pairs,
    query,
    seed_targets,
    truth,
)

from audit_job.emulator import EmulatorOptions

PAIRS = 2000
ITERATIONS = 6
SEED = 20240611
ENDED = {"succeeded", "completed_with_errors", "failed"}


def latest_run(db_url: str) -> tuple[int, str] | None:
    rows = asyncio.run(query(db_url, "SELECT id, status FROM audit_run ORDER BY id DESC LIMIT 1"))
    return (rows[0][0], rows[0][1]) if rows else None


def final_rows(db_url: str, run_id: int) -> list[tuple[str, str, str, object]]:
    return asyncio.run(
        query(
            db_url,
            "SELECT app_id, user_id, status, active FROM session_check WHERE run_id = :run",
            run=run_id,
        )
    )


@pytest.mark.slow
def test_kill_anywhere_then_resume(
    db_url: str, backend: str, tmp_path: Path, procs: Processes
) -> None:
    pairs = make_pairs(PAIRS, missing_every=40)
    asyncio.run(seed_targets(db_url, pairs))
    rng = random.Random(f"{SEED}-{backend}")
    log = tmp_path / "runs.log"
    with EmulatorThread(EmulatorOptions(seed=3, fault_5xx=0.03, fault_reset=0.02)) as emu:
        cfg = config_file(
            tmp_path / "audit-job.toml",
            host=emu.url,
            db_url=db_url,
            audit={"rate_per_second": 600, "concurrency": 24, "batch_size": 100},
        )
        kills, finished = 0, False
        for _ in range(ITERATIONS):
            found = latest_run(db_url)
            if found and found[1] in ENDED:  # the last kill came after the run had ended
                finished = True
                break
            resume = ["--resume", str(found[0])] if found else []
            proc = procs.start("--config", str(cfg), "run", "--no-progress", *resume, output=log)
            try:
                code = proc.wait(timeout=rng.uniform(0.4, 2.6))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                kills += 1
                continue
            assert code == 3, log.read_text()[-3000:]  # finished (unknown pairs are errors)
            finished = True
            break
        assert kills >= 3, "the delays should interrupt most iterations"
        found = latest_run(db_url)
        if not finished and not (found and found[1] in ENDED):
            resume = ["--resume", str(found[0])] if found else []
            proc = procs.start("--config", str(cfg), "run", "--no-progress", *resume, output=log)
            assert proc.wait(timeout=60) == 3, log.read_text()[-3000:]

        run_ids = asyncio.run(query(db_url, "SELECT id, status, total FROM audit_run"))
        assert len(run_ids) == 1, run_ids  # every attempt resumed the same run
        (resumed_id, status, total), *_ = run_ids
        assert status == "completed_with_errors" and total == PAIRS

        # The same truth, uninterrupted.
        proc = procs.start("--config", str(cfg), "run", "--no-progress", output=log)
        assert proc.wait(timeout=60) == 3, log.read_text()[-3000:]
        clean_id = latest_run(db_url)[0]  # type: ignore[index]

    resumed, clean = final_rows(db_url, resumed_id), final_rows(db_url, clean_id)
    for rows in (resumed, clean):
        assert len(rows) == PAIRS
        assert len({(a, u) for a, u, *_ in rows}) == PAIRS  # exactly one row per pair
        assert all(status != "pending" for _, _, status, _ in rows)
    resumed_active = {(a, u): (s, None if x is None else bool(x)) for a, u, s, x in resumed}
    clean_active = {(a, u): (s, None if x is None else bool(x)) for a, u, s, x in clean}
    assert resumed_active == clean_active
    for pair, (status, active) in resumed_active.items():
        expected = truth(*pair, seed=3)
        assert active is expected, pair
        assert status == {True: "active", False: "inactive", None: "error"}[expected]
    states = asyncio.run(query(db_url, "SELECT app_id, user_id, active, run_id FROM session_state"))
    assert len(states) == sum(1 for p in pairs if truth(*p, seed=3) is not None)
    assert all(bool(active) is truth(a, u, seed=3) for a, u, active, _ in states)
    workers = asyncio.run(query(db_url, "SELECT worker_id FROM audit_worker"))
    # Killed workers may linger in audit_worker until someone prunes them; they hold nothing.
    held = asyncio.run(query(db_url, "SELECT count(*) FROM session_check WHERE status = 'pending'"))
    assert held == [(0,)], workers
