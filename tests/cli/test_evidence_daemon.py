"""`audit-job daemon` with `[evidence] dir`: a bundle after each scheduled run, signed,
the newest `keep` kept, each one valid for `audit-job verify`."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import pytest
from helpers import cli_env, run_cli, write_config
from sqlalchemy import select

from audit_job.emulator import Emulator
from audit_job.store import targets as target_store
from audit_job.store.engine import opened
from audit_job.store.tables import audit_chain

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_daemon_writes_a_signed_bundle_per_run_and_keeps_the_newest(
    db_url: str, tmp_path: Path
) -> None:
    async with opened(db_url) as engine, engine.begin() as conn:
        await target_store.save_batch(conn, [(f"app-{n % 2}", f"u-{n}", None) for n in range(20)])
    keys = await asyncio.to_thread(run_cli, "evidence", "keygen", "--out", str(tmp_path / "k"))
    assert keys.returncode == 0, keys.stderr
    folder = tmp_path / "evidence"
    async with Emulator(delay_ms=2) as emu:
        config = write_config(
            tmp_path / "daemon.toml",
            {
                "database": {"url": db_url},
                "authing": {"host": emu.url, "access_key_id": "ak-demo",
                            "access_key_secret": "sk-demo"},
                "audit": {"concurrency": 2, "rate_per_second": 5000, "batch_size": 5},
                "schedule": {"interval_seconds": 1},
                "evidence": {"dir": str(folder), "keep": 2, "sign_key": str(tmp_path / "k.key")},
            },
        )  # fmt: skip
        log = tmp_path / "daemon.log"
        with log.open("wb") as err:
            daemon = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "audit_job", "--config", str(config), "daemon",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=err, env=cli_env(), cwd=tmp_path,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 40
            while "removed 1 older bundles" not in log.read_text(encoding="utf-8"):
                assert daemon.returncode is None, log.read_text(encoding="utf-8")
                assert time.monotonic() < deadline, log.read_text(encoding="utf-8")
                await asyncio.sleep(0.2)
            daemon.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(daemon.wait(), 20) == 0
        finally:
            if daemon.returncode is None:
                daemon.kill()
                await daemon.wait()
    bundles = sorted(folder.glob("audit-job-run-*.tar.gz"))
    assert len(bundles) == 2, bundles
    checked = await asyncio.to_thread(
        run_cli, "verify", *map(str, bundles), "--public-key", str(tmp_path / "k.pub")
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.count("ok manifest.json.sig: valid Ed25519 signature") == 2
    async with opened(db_url) as engine, engine.connect() as conn:
        sealed = {row.run_id for row in await conn.execute(select(audit_chain.c.run_id))}
    assert {int(p.name[14:22]) for p in bundles} <= sealed
