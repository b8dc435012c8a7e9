"""The database server (PostgreSQL, MariaDB) goes away mid-run (our own loopback proxy
between the tool and the server).

- back within `[database] write_retry_seconds`: the run retries its writes and completes,
  every pair asked exactly once (nothing answered was thrown away);
- away longer: the run stops with StoreUnavailable, resumable (left `running` with a dead
  heartbeat, or `interrupted`), and a resume completes it without touching what was written;
- a targets import cut mid-batch leaves whole batches only, and says so in one line.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from pgproxy import PgProxy
from pgsupport import server_backends
from relsupport import (
    Processes,
    asked_per_pair,
    cli_env,
    config_file,
    execute,
    make_pairs,
    query,
    seed_targets,
    truth,
    write_config,
    write_pairs_csv,
)

from audit_job import config
from audit_job.commands import run as run_service
from audit_job.commands.targets import IMPORT_BATCH
from audit_job.emulator import Emulator, EmulatorOptions
from audit_job.errors import StoreUnavailable

PAIRS = 1500


async def answered(db_url: str, run_id: int | None = None) -> int:
    rows = await query(db_url, "SELECT count(*) FROM session_check WHERE status <> 'pending'")
    return int(rows[0][0])


async def wait_for_answers(db_url: str, at_least: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while await answered(db_url) < at_least:
        assert time.monotonic() < deadline, "the run wrote nothing"
        await asyncio.sleep(0.05)


def run_config(tmp_path: Path, emu: Emulator, url: str, write_retry_seconds: float) -> Any:
    path = config_file(
        tmp_path / "audit-job.toml",
        host=emu.url,
        db_url=url,
        audit={"rate_per_second": 400, "concurrency": 16, "batch_size": 50},
        database={"write_retry_seconds": write_retry_seconds, "connect_timeout_seconds": 2},
    )
    return config.load(str(path))


async def assert_all_right(db_url: str, run_id: int, pairs: list[tuple[str, str]]) -> None:
    rows = await query(
        db_url,
        "SELECT app_id, user_id, status, active FROM session_check WHERE run_id = :run",
        run=run_id,
    )
    assert len(rows) == len(pairs) == len({(a, u) for a, u, *_ in rows})
    for app, user, status, active in rows:
        expected = truth(app, user, seed=5)
        assert status == {True: "active", False: "inactive", None: "error"}[expected]
        assert (None if active is None else bool(active)) is expected


@server_backends
async def test_outage_shorter_than_write_retry_completes(db_url: str, tmp_path: Path) -> None:
    pairs = make_pairs(PAIRS, missing_every=30)
    await seed_targets(db_url, pairs)
    with PgProxy.to(db_url) as proxy:
        async with Emulator(EmulatorOptions(seed=5)) as emu:
            loaded = run_config(tmp_path, emu, proxy.proxied(db_url), 60)
            run = asyncio.create_task(
                run_service.execute(loaded, run_service.RunRequest(), asyncio.Event())
            )
            try:
                await wait_for_answers(db_url, 200)
                proxy.cut()
                await asyncio.sleep(0.3)  # a COMMIT forwarded just before the cut may land
                before = await answered(db_url)
                await asyncio.sleep(2.5)
                assert await answered(db_url) == before  # really away
                assert not run.done()
                proxy.restore()
                summary = await asyncio.wait_for(run, 60)
            finally:
                run.cancel()
            stats = emu.stats()
    assert summary.status.value == "completed_with_errors"
    assert summary.counts["pending"] == 0
    await assert_all_right(db_url, summary.run_id, pairs)
    # Answers made while the database was away were kept and written later, not re-asked.
    assert set(asked_per_pair(stats).values()) == {1}
    assert len(asked_per_pair(stats)) == PAIRS


@server_backends
async def test_outage_longer_than_write_retry_stops_resumable(db_url: str, tmp_path: Path) -> None:
    pairs = make_pairs(PAIRS, missing_every=30)
    await seed_targets(db_url, pairs)
    with PgProxy.to(db_url) as proxy:
        async with Emulator(EmulatorOptions(seed=5)) as emu:
            loaded = run_config(tmp_path, emu, proxy.proxied(db_url), 1.5)
            run = asyncio.create_task(
                run_service.execute(loaded, run_service.RunRequest(), asyncio.Event())
            )
            try:
                await wait_for_answers(db_url, 300)
                proxy.cut()
                written = await query(
                    db_url,
                    "SELECT id, app_id, user_id, status, active, checked_at FROM session_check "
                    "WHERE status <> 'pending'",
                )
                with pytest.raises(StoreUnavailable, match=r"resume with: audit-job run --resume"):
                    await asyncio.wait_for(run, 60)
            finally:
                run.cancel()
            ((run_id, status),) = await query(db_url, "SELECT id, status FROM audit_run")
            assert status in ("running", "interrupted")
            assert await answered(db_url) < PAIRS

            proxy.restore()
            await asyncio.sleep(2.2)  # dead_after_seconds: the heartbeat has gone stale
            resumed = await asyncio.wait_for(
                run_service.execute(
                    loaded, run_service.RunRequest(resume_run_id=run_id), asyncio.Event()
                ),
                60,
            )
            stats = emu.stats()
    assert resumed.run_id == run_id and resumed.status.value == "completed_with_errors"
    await assert_all_right(db_url, run_id, pairs)
    after = {
        row[0]: row
        for row in await query(
            db_url,
            "SELECT id, app_id, user_id, status, active, checked_at FROM session_check",
        )
    }
    asked = asked_per_pair(stats)
    for row in written:  # written before the outage: kept as they were, never asked again
        assert after[row[0]] == row
        assert asked[(row[1], row[2])] == 1
    assert len(asked) == PAIRS


@server_backends
def test_import_cut_mid_batch_keeps_whole_batches(
    db_url: str, tmp_path: Path, procs: Processes
) -> None:
    pairs = make_pairs(5 * IMPORT_BATCH)
    csv_path = write_pairs_csv(tmp_path / "pairs.csv", pairs)
    with PgProxy.to(db_url) as proxy:
        cfg = write_config(tmp_path / "c.toml", {"database": {"url": proxy.proxied(db_url)}})
        # A first import sizes one batch's traffic; then cut in the middle of batch three.
        # (Measured on a scratch run rather than guessed: drivers differ in framing.)
        proxy.cut_after_bytes(10**12)
        proc = procs.start("--config", str(cfg), "targets", "import", str(csv_path), env=cli_env())
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        asyncio.run(execute(db_url, "DELETE FROM audit_target"))
        used = 10**12 - (proxy._budget or 0)
        proxy.cut_after_bytes(int(used * 2.5 / 5))
        proc = procs.start("--config", str(cfg), "targets", "import", str(csv_path), env=cli_env())
        out, err = proc.communicate(timeout=60)
    stderr = err.decode()
    assert proc.returncode == 1, (out, stderr)
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith(f"database {db_url.split('://')[0]}://"), stderr  # no SQL, no rows
    stored = asyncio.run(query(db_url, "SELECT app_id, user_id FROM audit_target"))
    assert len(stored) % IMPORT_BATCH == 0 and 0 < len(stored) < len(pairs), len(stored)
    # Whole batches, in file order: the first k batches and nothing of the next.
    assert set(stored) == set(pairs[: len(stored)])
