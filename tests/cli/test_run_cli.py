"""`audit-job run` and `audit-job worker` as real subprocesses against an in-process emulator
on loopback: SIGKILL then --resume, SIGTERM (once and twice), wrong credentials, a live run
refusing a second one, --dry-run, and a worker joining a run on PostgreSQL.

The emulator's `delay_ms` stretches a run over a few seconds where a signal must land in
the middle; the test polls the database for answers already written before it signals.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from helpers import cli_env, make_self_signed, write_config
from pgsupport import server_backends
from sqlalchemy import func, select

from audit_job.emulator import PAIR_SEPARATOR, Emulator, EmulatorOptions, truth
from audit_job.store import targets as target_store
from audit_job.store.engine import opened
from audit_job.store.tables import audit_claim, audit_run, session_check

SEED = 5
Pair = tuple[str, str]
only_sqlite = pytest.mark.parametrize("backend", ["sqlite"])


@dataclass
class Proc:
    process: asyncio.subprocess.Process
    out: Path
    err: Path
    started_at: float

    @property
    def stdout(self) -> str:
        return self.out.read_text(encoding="utf-8")

    @property
    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8")

    async def wait(self, timeout: float = 60) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)

    def summary(self) -> dict[str, Any]:
        lines = self.stdout.strip().splitlines()
        assert lines, self.stderr
        return json.loads(lines[-1])


class Cli:
    """Starts `python -m audit_job` subprocesses; kills whatever is left at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[Proc] = []
        self.started = 0

    async def start(self, *args: str) -> Proc:
        n = self.started  # taken before the first await: starts may run concurrently
        self.started += 1
        out, err = self.tmp_path / f"out-{n}.txt", self.tmp_path / f"err-{n}.txt"
        with out.open("wb") as out_file, err.open("wb") as err_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "audit_job",
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_file,
                stderr=err_file,
                env=cli_env(),
                cwd=self.tmp_path,
            )
        proc = Proc(process, out, err, time.monotonic())
        self.procs.append(proc)
        return proc

    async def run(self, *args: str, timeout: float = 60) -> Proc:
        proc = await self.start(*args)
        await proc.wait(timeout)
        return proc

    async def close(self) -> None:
        for proc in self.procs:
            if proc.process.returncode is None:
                proc.process.kill()
                await proc.process.wait()


@pytest.fixture
async def cli(tmp_path: Path) -> AsyncIterator[Cli]:
    runner = Cli(tmp_path)
    try:
        yield runner
    finally:
        await runner.close()


def config(
    path: Path, db_url: str, emulator_url: str, *, secret: str = "sk-demo", **audit: Any
) -> str:
    write_config(
        path,
        {
            "database": {"url": db_url},
            "authing": {
                "host": emulator_url,
                "access_key_id": "ak-demo",
                "access_key_secret": secret,
                "timeout_seconds": 5,
            },
            "audit": {"concurrency": 4, "rate_per_second": 5000, "batch_size": 5, **audit},
        },
    )
    return str(path)


def sample_pairs(count: int) -> list[Pair]:
    return [(("app-x", "app-y")[n % 2], f"user-{n:04d}") for n in range(count)]


async def seed_targets(url: str, pairs: list[Pair]) -> None:
    async with opened(url) as engine, engine.begin() as conn:
        await target_store.save_batch(conn, [(a, u, None) for a, u in pairs])


async def fetch(url: str, stmt: Any) -> list[Any]:
    async with opened(url) as engine, engine.connect() as conn:
        return list((await conn.execute(stmt)).all())


async def checks_of(url: str, run_id: int) -> dict[Pair, Any]:
    rows = await fetch(url, select(session_check).where(session_check.c.run_id == run_id))
    by_pair = {(r.app_id, r.user_id): r for r in rows}
    assert len(by_pair) == len(rows), "a pair has more than one row in the run"
    return by_pair


async def run_rows(url: str) -> list[Any]:
    return await fetch(url, select(audit_run).order_by(audit_run.c.id))


async def final_count(url: str, run_id: int) -> int:
    stmt = (
        select(func.count())
        .select_from(session_check)
        .where(session_check.c.run_id == run_id, session_check.c.status != "pending")
    )
    return int((await fetch(url, stmt))[0][0])


async def until(predicate: Callable[[], Any], timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        outcome = predicate()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def started_run(url: str, proc: Proc, min_final: int) -> int:
    """Wait until `proc` has a run with a snapshot and `min_final` answers written."""
    run_id: int | None = None

    async def ready() -> bool:
        nonlocal run_id
        assert proc.process.returncode is None, proc.stderr
        rows = [r for r in await run_rows(url) if r.snapshot_at is not None]
        if not rows:
            return False
        run_id = rows[-1].id
        return await final_count(url, run_id) >= min_final

    await until(ready, what=f"{min_final} answers written")
    assert run_id is not None
    return run_id


def asked(emu: Emulator) -> dict[Pair, int]:
    counts = {}
    for key, n in emu.stats()["per_pair"].items():
        app, user = key.split(PAIR_SEPARATOR)
        counts[(app, user)] = n
    return counts


def finals(checks: dict[Pair, Any]) -> dict[Pair, tuple[Any, ...]]:
    return {
        p: (r.status, r.active, r.checked_at, r.request_id)
        for p, r in checks.items()
        if r.status != "pending"
    }


def assert_all_true(checks: dict[Pair, Any], pairs: list[Pair]) -> None:
    assert set(checks) == set(pairs)
    for pair, row in checks.items():
        expected = truth(*pair, SEED)
        assert row.status == ("active" if expected else "inactive"), (pair, row)
        assert row.active is expected


@pytest.mark.timeout(60)
async def test_sigkill_then_resume_gives_one_row_per_pair_and_asks_only_the_rest(
    db_url: str, tmp_path: Path, cli: Cli
) -> None:
    pairs = sample_pairs(300)
    await seed_targets(db_url, pairs)
    async with Emulator(EmulatorOptions(seed=SEED, delay_ms=50)) as emu:
        cfg = config(tmp_path / "audit-job.toml", db_url, emu.url)
        proc = await cli.start("--config", cfg, "run", "--no-progress", "--json")
        run_id = await started_run(db_url, proc, min_final=40)
        proc.process.kill()
        assert await proc.wait() == -signal.SIGKILL
        await asyncio.sleep(0.2)  # let the emulator's handlers of the dead client end
        emu.reset_stats()
        emu.configure(delay_ms=0)

        before = await checks_of(db_url, run_id)
        kept = finals(before)
        pending = {p for p, r in before.items() if r.status == "pending"}
        assert set(before) == set(pairs)
        assert len(kept) >= 40 and pending, (len(kept), len(pending))
        (row,) = [r for r in await run_rows(db_url) if r.id == run_id]
        assert row.status == "running"  # nobody could record the death

        resumed = await cli.run("--config", cfg, "run", "--resume", str(run_id), "--json")
        assert resumed.process.returncode == 0, resumed.stderr
        again = asked(emu)

    assert resumed.summary()["run_id"] == run_id
    assert resumed.summary()["status"] == "succeeded"
    # Pairs answered before the kill are not asked again; the others exactly once.
    assert again == dict.fromkeys(pending, 1)
    after = await checks_of(db_url, run_id)
    assert_all_true(after, pairs)
    assert {p: v for p, v in finals(after).items() if p in kept} == kept
    (row,) = [r for r in await run_rows(db_url) if r.id == run_id]
    assert (row.status, row.total, row.active + row.inactive) == ("succeeded", 300, 300)


@pytest.mark.timeout(60)
async def test_sigterm_interrupts_keeps_every_answer_and_resume_completes(
    db_url: str, tmp_path: Path, cli: Cli
) -> None:
    pairs = sample_pairs(300)
    await seed_targets(db_url, pairs)
    async with Emulator(EmulatorOptions(seed=SEED, delay_ms=50)) as emu:
        cfg = config(tmp_path / "audit-job.toml", db_url, emu.url)
        proc = await cli.start("--config", cfg, "run", "--no-progress", "--json")
        run_id = await started_run(db_url, proc, min_final=30)
        kept = finals(await checks_of(db_url, run_id))
        proc.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = await proc.wait(timeout=20)
        assert time.monotonic() - signalled < 10
        assert code == 130, proc.stderr
        answered_by_emulator = set(asked(emu))

        checks = await checks_of(db_url, run_id)
        now_final = finals(checks)
        pending = {p for p, r in checks.items() if r.status == "pending"}
        # Every answer the emulator gave was written (in-flight ones included), and the
        # rows final before the signal are untouched.
        assert set(now_final) == answered_by_emulator
        assert {p: v for p, v in now_final.items() if p in kept} == kept
        assert pending, "the run ended before the signal; stretch it"
        summary = proc.summary()
        assert summary["status"] == "interrupted"
        assert summary["counts"]["pending"] == len(pending)
        (row,) = [r for r in await run_rows(db_url) if r.id == run_id]
        assert row.status == "interrupted"
        assert f"--resume {run_id}" in row.message

        emu.reset_stats()
        emu.configure(delay_ms=0)
        resumed = await cli.run("--config", cfg, "run", "--resume", str(run_id), "--json")
        assert resumed.process.returncode == 0, resumed.stderr
        assert asked(emu) == dict.fromkeys(pending, 1)
    assert_all_true(await checks_of(db_url, run_id), pairs)


@only_sqlite
@pytest.mark.timeout(60)
async def test_second_sigterm_exits_at_once_and_the_run_stays_resumable(
    db_url: str, tmp_path: Path, cli: Cli
) -> None:
    pairs = sample_pairs(40)
    await seed_targets(db_url, pairs)
    async with Emulator(EmulatorOptions(seed=SEED, delay_ms=4000)) as emu:
        cfg = config(tmp_path / "audit-job.toml", db_url, emu.url)
        proc = await cli.start("--config", cfg, "run", "--no-progress", "--json")
        await until(lambda: emu.stats()["in_flight"] >= 4, what="requests in flight")
        proc.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert proc.process.returncode is None  # the first signal waits for the requests
        proc.process.send_signal(signal.SIGTERM)
        second = time.monotonic()
        code = await proc.wait(timeout=20)
        # The requests in flight had ~3 s left; the second signal does not wait for them.
        assert time.monotonic() - second < 2.0
        assert code == 128 + signal.SIGTERM, proc.stderr
        assert "second signal" in proc.stderr

        (run,) = await run_rows(db_url)
        checks = await checks_of(db_url, run.id)
        assert all(r.status == "pending" for r in checks.values())
        emu.configure(delay_ms=0)
        resumed = await cli.run("--config", cfg, "run", "--resume", str(run.id), "--json")
        assert resumed.process.returncode == 0, resumed.stderr
    assert_all_true(await checks_of(db_url, run.id), pairs)


@pytest.mark.timeout(60)
async def test_wrong_credentials_fail_fast_and_leave_pairs_pending(
    db_url: str, tmp_path: Path, cli: Cli
) -> None:
    pairs = sample_pairs(100)
    await seed_targets(db_url, pairs)
    concurrency = 8
    async with Emulator(EmulatorOptions(seed=SEED)) as emu:
        bad = config(tmp_path / "bad.toml", db_url, emu.url, secret="wrong", concurrency=8)
        proc = await cli.run("--config", bad, "run", "--no-progress")
        assert proc.process.returncode == 1, proc.stdout + proc.stderr
        assert "credentials rejected" in proc.stdout, proc.stdout
        assert "Traceback" not in proc.stderr
        stats = emu.stats()
        assert 3 <= stats["requests_total"] <= concurrency + 3, stats["requests_total"]
        assert stats["auth_failures"] == stats["requests_total"]

        (run,) = await run_rows(db_url)
        assert run.status == "failed"
        assert "credentials rejected" in run.message and f"--resume {run.id}" in run.message
        checks = await checks_of(db_url, run.id)
        assert {r.status for r in checks.values()} == {"pending"}  # none recorded as errors
        assert len(checks) == 100

        good = config(tmp_path / "good.toml", db_url, emu.url)
        resumed = await cli.run("--config", good, "run", "--resume", str(run.id), "--json")
        assert resumed.process.returncode == 0, resumed.stderr
    assert resumed.summary()["status"] == "succeeded"
    assert_all_true(await checks_of(db_url, run.id), pairs)


@only_sqlite
@pytest.mark.timeout(60)
async def test_a_live_run_refuses_a_second_a_dead_one_is_reported(
    db_url: str, tmp_path: Path, cli: Cli
) -> None:
    pairs = sample_pairs(200)  # ~20 s if left alone: it is still live when refused
    await seed_targets(db_url, pairs)
    async with Emulator(EmulatorOptions(seed=SEED, delay_ms=200)) as emu:
        cfg = config(tmp_path / "audit-job.toml", db_url, emu.url, concurrency=2)
        slow = await cli.start("--config", cfg, "run", "--no-progress")
        first = await started_run(db_url, slow, min_final=5)

        refused = await cli.run("--config", cfg, "run", "--no-progress")
        assert refused.process.returncode == 1
        assert f"run {first} is still running" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
        assert len(await run_rows(db_url)) == 1  # no run row was created

        slow.process.kill()
        await slow.wait()
        emu.configure(delay_ms=0)
        nxt = await cli.run("--config", cfg, "run", "--no-progress", "--json")
        assert nxt.process.returncode == 0, nxt.stderr
        second = nxt.summary()["run_id"]
        assert f"run {first} had died" in nxt.stderr, nxt.stderr
        assert_all_true(await checks_of(db_url, second), pairs)
        dead = next(r for r in await run_rows(db_url) if r.id == first)
        assert dead.status == "interrupted" and "died" in dead.message

        ended = await cli.run("--config", cfg, "run", "--resume", str(second))
        assert ended.process.returncode == 1
        assert f"run {second} has ended (succeeded)" in ended.stderr, ended.stderr

        resumed = await cli.run("--config", cfg, "run", "--resume", str(first), "--json")
        assert resumed.process.returncode == 0, resumed.stderr
    assert_all_true(await checks_of(db_url, first), pairs)


@only_sqlite
@pytest.mark.timeout(60)
async def test_dry_run_counts_without_calling_the_api_or_creating_a_run(
    db_url: str, tmp_path: Path, cli: Cli
) -> None:
    pairs = sample_pairs(30)
    await seed_targets(db_url, pairs)
    async with Emulator(EmulatorOptions(seed=SEED)) as emu:
        cfg = config(tmp_path / "audit-job.toml", db_url, emu.url)
        everything, by_app, by_user, text = await asyncio.gather(
            cli.run("--config", cfg, "run", "--dry-run", "--json"),
            cli.run("--config", cfg, "run", "--dry-run", "--json", "--app", "app-y"),
            cli.run("--config", cfg, "run", "--dry-run", "--json", "--user", "user-0003"),
            cli.run("--config", cfg, "run", "--dry-run"),
        )
        assert emu.stats()["requests_total"] == 0
    for proc in (everything, by_app, by_user, text):
        assert proc.process.returncode == 0, proc.stderr
    assert json.loads(everything.stdout)["pairs"] == 30
    planned = json.loads(by_app.stdout)
    assert planned["pairs"] == 15
    assert {p["app_id"] for p in planned["sample"]} == {"app-y"}
    assert json.loads(by_user.stdout) == {
        "pairs": 1,
        "sample": [{"app_id": "app-y", "user_id": "user-0003"}],
        "source": "audit_target (enabled)",
    }
    assert text.stdout.startswith("would check 30 pairs")
    assert await run_rows(db_url) == []


async def owner_and_worker(
    db_url: str, tmp_path: Path, cli: Cli, emu: Emulator
) -> tuple[Proc, Proc, int]:
    """A run under way, and a worker started to join it: (owner, worker, run id)."""
    # A modest rate stretches the run over a few seconds and keeps claims small (they
    # scale with the rate), so rows are still unclaimed when the worker arrives.
    cfg = config(tmp_path / "audit-job.toml", db_url, emu.url, concurrency=4, rate_per_second=40)
    owner = await cli.start("--config", cfg, "run", "--no-progress", "--json")
    run_id = await started_run(db_url, owner, min_final=1)
    worker = await cli.start("--config", cfg, "worker", "--run", str(run_id), "--json")
    return owner, worker, run_id


@server_backends
@pytest.mark.timeout(60)
async def test_a_worker_joins_a_live_run_and_no_pair_is_asked_twice(
    db_url: str, tmp_path: Path, cli: Cli
) -> None:
    pairs = sample_pairs(400)
    await seed_targets(db_url, pairs)
    async with Emulator(EmulatorOptions(seed=SEED, delay_ms=20)) as emu:
        owner, worker, run_id = await owner_and_worker(db_url, tmp_path, cli, emu)
        assert await worker.wait() == 0, worker.stderr
        assert await owner.wait() == 0, owner.stderr
        seen = asked(emu)

    assert seen == dict.fromkeys(pairs, 1)  # no pair asked by both processes
    assert worker.summary()["run_id"] == run_id
    assert worker.summary()["checks_per_second"] > 0  # it did answer some pairs
    assert owner.summary()["status"] == "succeeded"
    assert_all_true(await checks_of(db_url, run_id), pairs)
    (row,) = await run_rows(db_url)
    assert (row.status, row.total) == ("succeeded", 400)


@server_backends
@pytest.mark.timeout(60)
async def test_a_killed_workers_rows_are_taken_over_and_every_pair_ends_once(
    db_url: str, tmp_path: Path, cli: Cli
) -> None:
    pairs = sample_pairs(300)
    await seed_targets(db_url, pairs)
    async with Emulator(EmulatorOptions(seed=SEED, delay_ms=20)) as emu:
        owner, worker, run_id = await owner_and_worker(db_url, tmp_path, cli, emu)

        async def worker_holds_rows() -> bool:
            holders = await fetch(
                db_url, select(audit_claim.c.worker_id).where(audit_claim.c.run_id == run_id)
            )
            return len({row.worker_id for row in holders}) == 2

        await until(worker_holds_rows, 45, what="the worker's first claim")
        worker.process.kill()  # no release, no unregister: its claim is left behind
        await worker.wait()
        assert await owner.wait() == 0, owner.stderr
        seen = asked(emu)

    assert set(seen) == set(pairs)  # the killed worker's rows were asked after all
    assert owner.summary()["status"] == "succeeded"
    assert_all_true(await checks_of(db_url, run_id), pairs)  # one final row per pair


@asynccontextmanager
async def self_signed_server(folder: Path) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback HTTPS server whose certificate no CA signed; (its URL, handshakes done)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*make_self_signed(folder))
    answered: list[int] = []

    async def answer(request: web.Request) -> web.Response:
        answered.append(1)
        return web.json_response({"statusCode": 200, "message": "", "data": {"active": True}})

    app = web.Application()
    app.router.add_post("/api/v3/check-session-status", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}", answered
    finally:
        await runner.cleanup()


def tls_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "TLS" in line or "SSL" in line]


@only_sqlite
@pytest.mark.timeout(240)
async def test_a_rejected_certificate_is_one_line_however_the_handshakes_race(
    db_url: str, tmp_path: Path, cli: Cli
) -> None:
    """64 connections start at once and every handshake fails; the first failure stops the
    run while the others are still handshaking. Whatever the timing, the user gets the
    exit code and one line; the detail only with --verbose."""
    await seed_targets(db_url, sample_pairs(300))
    async with self_signed_server(tmp_path) as (url, answered):
        cfg = config(tmp_path / "audit-job.toml", db_url, url, concurrency=64, batch_size=50)
        for attempt in range(8):
            proc = await cli.run("--config", cfg, "run", "--no-progress", timeout=60)
            assert proc.process.returncode == 1, (attempt, proc.stderr)
            assert "Traceback" not in proc.stderr, (attempt, proc.stderr)
            assert "SSLCertVerificationError" not in proc.stderr + proc.stdout, attempt
            assert tls_lines(proc.stderr) == [], (attempt, proc.stderr)
            message = [line for line in proc.stdout.splitlines() if "TLS" in line]
            assert len(message) == 1, (attempt, proc.stdout)
            assert f"{url}: TLS certificate verification failed" in message[0]
            assert "self-signed certificate" in message[0] and "verify_tls" in message[0]
        verbose = await cli.run("--verbose", "--config", cfg, "run", "--no-progress")
        assert verbose.process.returncode == 1, verbose.stderr
        assert "SSLCertVerificationError" in verbose.stderr, verbose.stderr
        assert "CERTIFICATE_VERIFY_FAILED" in verbose.stderr
    assert answered == []  # no request got past a handshake
    runs = await run_rows(db_url)
    assert len(runs) == 9 and {r.status for r in runs} == {"failed"}
