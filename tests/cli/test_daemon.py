"""`audit-job daemon` as real subprocesses: slots, overlap, missed slots, leadership.

Interval 1 s schedules and 3 s leases keep every scenario within a few seconds. Each
daemon talks to an in-process emulator (its own, where the test must tell whose answers
were written); a loopback TCP proxy stands between one daemon and the database server
where the test cuts the database away. Every test ends by checking that each slot from the
first to the last is accounted for by exactly one `audit_run` row, and that every run the
scheduler started names the slot it serves.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from feedcheck import feed, payload
from helpers import cli_env, write_config
from pgsupport import server_backends
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from audit_job.emulator import Emulator
from audit_job.store import targets as target_store
from audit_job.store.engine import opened
from audit_job.store.tables import audit_run, leader_lease, session_check

LEASE = 3.0
BOUND = LEASE + LEASE / 3 + 3.0  # expiry + one follower check + process/DB slack
PAIRS = [(f"app-{n % 3}", f"user-{n:03d}") for n in range(24)]


class Daemon:
    def __init__(self, process: asyncio.subprocess.Process, err: Path, port: int | None):
        self.process = process
        self.err = err
        self.port = port

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log(self) -> str:
        return self.err.read_text(encoding="utf-8")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def stop(self, timeout: float = 15) -> int:
        self.signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def get(self, path: str) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.port}{path}") as response,
        ):
            return response.status, await response.text()


class Daemons:
    """Starts daemons; at teardown wakes and kills whatever is left."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Daemon] = []
        self.count = 0

    def config(
        self,
        db_url: str,
        emulator_url: str,
        *,
        listen: bool = False,
        tail: str = "",
        **schedule: Any,
    ) -> tuple[Path, int | None]:
        """The daemon's config file; `tail` is TOML appended as it is (more sections)."""
        port = free_port() if listen else None
        daemon: dict[str, Any] = {"lease_seconds": LEASE}
        if port:
            daemon["listen"] = f"127.0.0.1:{port}"
        path = write_config(
            self.tmp_path / f"daemon-{self.count}.toml",
            {
                "database": {"url": db_url, "connect_timeout_seconds": 2},
                "authing": {
                    "host": emulator_url,
                    "access_key_id": "ak-demo",
                    "access_key_secret": "sk-demo",
                    "timeout_seconds": 5,
                },
                "audit": {
                    "concurrency": 2,
                    "rate_per_second": 5000,
                    "batch_size": 2,
                    "heartbeat_seconds": 0.5,
                    "dead_after_seconds": 3,
                },
                "schedule": {"interval_seconds": 1, **schedule},
                "daemon": daemon,
            },
        )
        if tail:
            path.write_text(path.read_text(encoding="utf-8") + tail, encoding="utf-8")
        return path, port

    async def start(self, db_url: str, emulator_url: str, **options: Any) -> Daemon:
        self.count += 1
        path, port = self.config(db_url, emulator_url, **options)
        err = self.tmp_path / f"daemon-{self.count}.log"
        with err.open("wb") as err_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "audit_job",
                "--config",
                str(path),
                "daemon",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err_file,
                env=cli_env(),
                cwd=self.tmp_path,
            )
        daemon = Daemon(process, err, port)
        self.started.append(daemon)
        return daemon

    async def close(self) -> None:
        for daemon in self.started:
            if daemon.process.returncode is None:
                daemon.signal(signal.SIGCONT)
                daemon.process.kill()
                await daemon.process.wait()


@pytest.fixture
async def daemons(tmp_path: Path) -> AsyncIterator[Daemons]:
    runner = Daemons(tmp_path)
    try:
        yield runner
    finally:
        await runner.close()


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(delay_ms=5) as emu:
        yield emu


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def seed(url: str) -> None:
    async with opened(url) as engine, engine.begin() as conn:
        await target_store.save_batch(conn, [(a, u, None) for a, u in PAIRS])


async def rows(url: str, table: Any = audit_run) -> list[Any]:
    async with opened(url) as engine, engine.connect() as conn:
        return list((await conn.execute(select(table))).all())


async def eventually(probe: Any, timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(step)


def slot_rows(runs: list[Any]) -> list[Any]:
    return [r for r in runs if r.scheduled_for is not None]


def assert_every_slot_once(runs: list[Any], step: float = 1.0) -> list[datetime]:
    """Each slot (every `step` s) from the first to the last recorded one has exactly one
    row, and no run the scheduler started lacks its slot."""
    unnamed = [
        r.id
        for r in runs
        if r.trigger == "schedule"
        and r.status not in ("skipped_overlap", "missed")
        and r.scheduled_for is None
    ]
    assert unnamed == [], f"scheduler runs without their slot: {unnamed}"
    covered: list[datetime] = []
    for r in slot_rows(runs):
        if r.status == "missed":
            first, count = r.missed_first, r.missed_count
            covered += [first + timedelta(seconds=step * k) for k in range(count)]
            assert covered[-1] == r.missed_last == r.scheduled_for
        else:
            covered.append(r.scheduled_for)
    assert len(covered) == len(set(covered)), sorted(covered)
    low, high = min(covered), max(covered)
    expected = int((high - low).total_seconds() / step) + 1
    assert len(covered) == expected, sorted(covered)
    return sorted(covered)


def assert_never_two_at_once(runs: list[Any]) -> None:
    spans = sorted(
        (r.started_at, r.finished_at) for r in runs if r.total and r.finished_at is not None
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, spans


async def assert_feed_matches_runs(url: str) -> None:
    """Each slot row has its slot event, each ended run its run event, each once, and
    the feed holds no other slot or run event."""
    runs = await rows(url)
    got = [e for e in await feed(url) if e.type.startswith(("slot.", "run."))]
    expected = sorted(
        [("slot.skipped", r.id, None) for r in runs if r.status == "skipped_overlap"]
        + [("slot.missed", r.id, r.missed_count) for r in runs if r.status == "missed"]
        + [("run.finished", r.id, None) for r in runs if r.status == "succeeded"]
    )
    events = [
        (e.type, e.run_id, payload(e).get("missed_count") if e.type == "slot.missed" else None)
        for e in got
    ]
    assert sorted(events) == expected


def metric(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name + labels + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{labels} not in /metrics")


# -- one daemon ----------------------------------------------------------------------------


async def test_runs_each_slot_serves_health_and_metrics_and_stops_on_sigterm(
    db_url: str, daemons: Daemons, emulator: Emulator
) -> None:
    await seed(db_url)
    daemon = await daemons.start(db_url, emulator.url, listen=True)

    async def three_runs() -> bool:
        return len([r for r in await rows(db_url) if r.status == "succeeded"]) >= 3

    await eventually(three_runs, 15, "three succeeded runs")
    status, body = await eventually(lambda: daemon.get("/healthz"), 5, "/healthz")
    assert status == 200 and body.startswith("ok: leader (epoch 1)"), body
    status, text = await daemon.get("/metrics")
    assert status == 200
    assert await daemon.stop() == 0
    assert "leadership (epoch 1) released" in daemon.log
    runs = await rows(db_url)
    assert all(r.trigger == "schedule" and r.epoch == 1 for r in runs)
    assert all(r.status in ("succeeded", "skipped_overlap", "interrupted") for r in runs), runs
    assert_every_slot_once(runs)
    assert_never_two_at_once(runs)
    # The scrape happened mid-life: its figures are real, and at most the runs seen so far.
    succeeded = [r for r in runs if r.status == "succeeded"]
    ended = metric(text, "audit_job_runs_total", '{status="succeeded"}')
    assert 3 <= ended <= len(succeeded)
    checks = sum(
        metric(text, "audit_job_checks_total", f'{{outcome="{o}"}}')
        for o in ("active", "inactive", "error")
    )
    assert ended * len(PAIRS) <= checks <= (ended + 1) * len(PAIRS)
    assert metric(text, "audit_job_http_responses_total", '{status="200"}') >= checks
    assert metric(text, "audit_job_request_latency_seconds_count") >= checks
    assert metric(text, "audit_job_leader") == 1
    assert metric(text, "audit_job_leader_epoch") == 1
    assert metric(text, "audit_job_last_success_timestamp_seconds") > time.time() - 60
    for app in ("app-0", "app-1", "app-2"):
        age = metric(text, "audit_job_state_oldest_age_seconds", f'{{app_id="{app}"}}')
        assert 0 <= age < 30
    run_ids = {str(r.id) for r in succeeded}
    assert any(f"run={i}:" in daemon.log for i in run_ids)
    assert "sk-demo" not in daemon.log


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_second_daemon_on_one_sqlite_file_refuses(
    db_url: str, daemons: Daemons, emulator: Emulator
) -> None:
    first = await daemons.start(db_url, emulator.url)
    await eventually(lambda: _has(first, "leader now"), 15, "the first daemon leads")
    second = await daemons.start(db_url, emulator.url)
    assert await asyncio.wait_for(second.process.wait(), 15) == 1
    assert "already serves" in second.log and "only one daemon" in second.log
    assert "Traceback" not in second.log
    await eventually(lambda: _any_status(db_url, "succeeded"), 15, "the first daemon runs")
    assert await first.stop() == 0
    assert_every_slot_once(await rows(db_url))


async def _has(daemon: Daemon, text: str) -> bool:
    return text in daemon.log


@server_backends
async def test_overlap_is_skipped_and_a_stopped_daemon_records_missed_slots_then_catches_up(
    db_url: str, daemons: Daemons, emulator: Emulator
) -> None:
    await seed(db_url)
    emulator.configure(delay_ms=200)  # 24 pairs, 2 at a time: a run lasts ~2.5 s
    daemon = await daemons.start(db_url, emulator.url)

    async def skipped() -> bool:
        return any(r.status == "skipped_overlap" for r in await rows(db_url))

    await eventually(skipped, 15, "a skipped_overlap row")
    await asyncio.sleep(0.7)
    assert await daemon.stop() == 0
    stopped = await rows(db_url)
    interrupted = [r.id for r in stopped if r.status == "interrupted"]
    last = max(r.scheduled_for for r in slot_rows(stopped))
    # Down across at least four slots: three or more missed, the latest one caught up.
    while datetime.now(UTC) < last + timedelta(seconds=4.2):
        await asyncio.sleep(0.1)
    emulator.configure(delay_ms=5)
    again = await daemons.start(db_url, emulator.url)

    async def caught_up() -> list[Any]:
        runs = await rows(db_url)
        missed = [r for r in runs if r.status == "missed"]
        slot = missed[0].missed_last + timedelta(seconds=1) if missed else None
        done = [r for r in runs if r.scheduled_for == slot and r.status == "succeeded"]
        return runs if done else []

    runs = await eventually(caught_up, 20, "the catch-up run of the latest missed slot")
    assert await again.stop() == 0
    runs = await rows(db_url)
    missed = [r for r in runs if r.status == "missed"]
    assert len(missed) == 1, missed
    assert missed[0].missed_count >= 3
    assert missed[0].missed_first == last + timedelta(seconds=1)
    assert [r for r in runs if r.scheduled_for is None] == []
    for run_id in interrupted:  # resumed first, then finished
        assert next(r for r in runs if r.id == run_id).status == "succeeded"
    assert_every_slot_once(runs)
    assert_never_two_at_once(runs)
    await assert_feed_matches_runs(db_url)


async def scheduler_runs_without_a_slot(url: str) -> list[int]:
    """SQL: runs the scheduler started (not a skipped or missed row) that name no slot."""
    c = audit_run.c
    query = select(c.id).where(
        c.trigger == "schedule",
        c.status.not_in(["skipped_overlap", "missed"]),
        c.scheduled_for.is_(None),
    )
    async with opened(url) as engine, engine.connect() as conn:
        return list((await conn.execute(query)).scalars())


async def slots_with_two_rows(url: str) -> list[Any]:
    c = audit_run.c
    query = (
        select(c.scheduled_for)
        .where(c.scheduled_for.is_not(None))
        .group_by(c.scheduled_for)
        .having(func.count() > 1)
    )
    async with opened(url) as engine, engine.connect() as conn:
        return list((await conn.execute(query)).scalars())


async def test_after_a_downtime_the_catch_up_run_names_the_latest_missed_slot(
    db_url: str, daemons: Daemons, emulator: Emulator
) -> None:
    """Down 7 s at a 2 s interval: one `missed` row for the slots before the latest one,
    and the catch-up run for the latest one; no run without its slot, no slot twice."""
    await seed(db_url)
    first = await daemons.start(db_url, emulator.url, interval_seconds=2)

    async def one_run() -> bool:
        return any(r.status == "succeeded" for r in await rows(db_url))

    await eventually(one_run, 20, "a succeeded run")
    assert await first.stop() == 0
    last = max(r.scheduled_for for r in slot_rows(await rows(db_url)))
    while datetime.now(UTC) < last + timedelta(seconds=7):
        await asyncio.sleep(0.1)
    restarted_at = datetime.now(UTC)
    again = await daemons.start(db_url, emulator.url, interval_seconds=2)

    async def caught_up() -> bool:
        runs = await rows(db_url)
        return any(r.status == "missed" for r in runs) and any(
            r.status == "succeeded" and r.started_at >= restarted_at for r in runs
        )

    await eventually(caught_up, 25, "the missed row and a run after the restart")
    assert await again.stop() == 0
    runs = await rows(db_url)
    assert await scheduler_runs_without_a_slot(db_url) == []
    assert await slots_with_two_rows(db_url) == []
    (missed,) = [r for r in runs if r.status == "missed"]
    assert missed.missed_first == last + timedelta(seconds=2)
    assert missed.missed_count >= 2  # 7 s down: at least 3 slots, the latest one caught up
    catch_up = next(r for r in runs if r.scheduled_for == missed.missed_last + timedelta(seconds=2))
    assert catch_up.trigger == "schedule" and catch_up.status == "succeeded"
    assert catch_up.scheduled_for < catch_up.started_at  # run late, for a slot of the downtime
    assert catch_up.scheduled_for >= last + timedelta(seconds=6)
    assert catch_up.total == len(PAIRS)
    later = [r for r in slot_rows(runs) if r.scheduled_for > last]
    assert all(r.started_at >= restarted_at for r in later)
    assert_every_slot_once(runs, step=2.0)
    assert_never_two_at_once(runs)
    await assert_feed_matches_runs(db_url)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_without_catch_up_the_missed_row_covers_the_whole_downtime(
    db_url: str, daemons: Daemons, emulator: Emulator
) -> None:
    await seed(db_url)
    first = await daemons.start(db_url, emulator.url, catch_up=False)
    await eventually(lambda: _any_status(db_url, "succeeded"), 20, "a succeeded run")
    assert await first.stop() == 0
    last = max(r.scheduled_for for r in slot_rows(await rows(db_url)))
    while datetime.now(UTC) < last + timedelta(seconds=3.2):
        await asyncio.sleep(0.1)
    again = await daemons.start(db_url, emulator.url, catch_up=False)
    await eventually(lambda: _any_status(db_url, "missed"), 20, "the missed row")
    missed = next(r for r in await rows(db_url) if r.status == "missed")

    async def a_later_run() -> bool:
        return any(
            r.status == "succeeded" and r.scheduled_for > missed.scheduled_for
            for r in slot_rows(await rows(db_url))
        )

    await eventually(a_later_run, 20, "a run of a slot after the downtime")
    assert await again.stop() == 0
    runs = await rows(db_url)
    assert missed.missed_first == last + timedelta(seconds=1)
    assert missed.missed_count >= 3
    # No catch-up: every slot of the downtime is on the missed row, none has a run.
    downtime = [r for r in slot_rows(runs) if last < r.scheduled_for <= missed.missed_last]
    assert [r.id for r in downtime] == [missed.id]
    assert_every_slot_once(runs)


async def _any_status(url: str, status: str) -> bool:
    return any(r.status == status for r in await rows(url))


# -- several daemons on one PostgreSQL -------------------------------------------------------
# -- several daemons on one database server ----------------------------------------------


async def lease(url: str) -> Any:
    found = [row for row in await rows(url, leader_lease) if row.name == "daemon"]
    return found[0] if found else None


def owner_pid(owner: str | None) -> int | None:
    return int(owner.split(":")[1]) if owner else None


@server_backends
async def test_four_daemons_give_one_run_per_slot(
    db_url: str, daemons: Daemons, emulator: Emulator
) -> None:
    await seed(db_url)
    group = await asyncio.gather(*(daemons.start(db_url, emulator.url) for _ in range(4)))

    async def runs_done() -> bool:
        return len([r for r in await rows(db_url) if r.status == "succeeded"]) >= 4

    await eventually(runs_done, 45, "four runs")  # four processes starting on a busy host
    leader = owner_pid((await lease(db_url)).owner)
    await asyncio.gather(*(d.stop() for d in group))
    runs = await rows(db_url)
    assert {owner_pid(r.owner) for r in runs} == {leader}
    assert len([d for d in group if "leader now" in d.log]) == 1
    assert_every_slot_once(runs)
    assert_never_two_at_once(runs)


@server_backends
async def test_sigkill_of_the_leader_hands_over_within_the_bound_and_resumes(
    db_url: str, daemons: Daemons, emulator: Emulator
) -> None:
    await seed(db_url)
    emulator.configure(delay_ms=150)
    a = await daemons.start(db_url, emulator.url)
    await eventually(lambda: _has(a, "leader now"), 15, "A leads")
    b = await daemons.start(db_url, emulator.url)

    async def mid_run() -> Any:
        done = [r for r in await rows(db_url, session_check) if r.status != "pending"]
        return done if len(done) >= 4 else None

    await eventually(mid_run, 15, "A's run half done")
    before = await lease(db_url)
    assert owner_pid(before.owner) == a.pid
    live = [r for r in await rows(db_url) if r.status == "running"]
    a.signal(signal.SIGKILL)
    await a.process.wait()
    killed_at = time.monotonic()

    async def b_leads() -> Any:
        now = await lease(db_url)
        return now if now and owner_pid(now.owner) == b.pid else None

    after = await eventually(b_leads, BOUND + 2, "B takes over", step=0.1)
    assert time.monotonic() - killed_at < BOUND
    assert after.epoch == before.epoch + 1
    assert len(live) == 1 and owner_pid(live[0].owner) == a.pid
    interrupted_run = live[0].id

    async def resumed() -> bool:
        run = next(r for r in await rows(db_url) if r.id == interrupted_run)
        return run.status == "succeeded" and owner_pid(run.owner) == b.pid

    await eventually(resumed, 15, "B resumes A's run")
    assert await b.stop() == 0
    runs = await rows(db_url)
    assert_every_slot_once(runs)
    assert_never_two_at_once([r for r in runs if r.id != interrupted_run])


@server_backends
async def test_a_frozen_leader_is_fenced_out_after_the_takeover(
    db_url: str, daemons: Daemons, emulator: Emulator
) -> None:
    await seed(db_url)
    async with Emulator(delay_ms=300) as slow:  # A's answers come from here
        a = await daemons.start(db_url, slow.url)
        await eventually(lambda: _has(a, "leader now"), 15, "A leads")
        b = await daemons.start(db_url, emulator.url)

        async def a_mid_run() -> bool:
            checks = await rows(db_url, session_check)
            return len([c for c in checks if c.status != "pending"]) >= 2

        await eventually(a_mid_run, 15, "A's run under way")
        a.signal(signal.SIGSTOP)  # requests in flight: their answers wait in A's memory
        frozen = await lease(db_url)

        async def b_leads() -> Any:
            now = await lease(db_url)
            return now if now and owner_pid(now.owner) == b.pid else None

        await eventually(b_leads, BOUND + 2, "B takes over")
        await asyncio.sleep(1.0)
        woke_at = datetime.now(UTC)
        a.signal(signal.SIGCONT)
        await eventually(lambda: _has(a, "not leader any more"), 10, "A steps down")
        await asyncio.sleep(2.0)
        assert a.process.returncode is None  # stepped down, still serving as a follower
        checks = await rows(db_url, session_check)
        runs = await rows(db_url)
        assert await asyncio.gather(a.stop(), b.stop()) == [0, 0]
    # A's answers (from its own emulator) written before the freeze are there; every one
    # it obtained after waking was refused by the fence.
    a_answers = [c for c in checks if c.request_id and _from(slow, c.request_id)]
    assert a_answers
    assert all(c.checked_at < woke_at for c in a_answers), len(a_answers)
    # Whichever A noticed first after waking: a batch refused by the fence, or its lease
    # check (then the run stops before any batch is tried); the checks above show either way
    # that nothing it obtained after waking was written.
    assert (
        "fenced" in a.log or "writes nothing more" in a.log or "stops without writing more" in a.log
    ), a.log
    assert all(owner_pid(r.owner) != a.pid for r in runs if r.started_at >= woke_at)
    assert (await lease(db_url)).epoch >= frozen.epoch + 1
    assert_every_slot_once(await rows(db_url))


def _from(emu: Emulator, request_id: str) -> bool:
    return request_id.startswith(emu._id_prefix + "-")


# -- the database cut away -------------------------------------------------------------------


class Proxy:
    """Loopback TCP proxy to the database server that the test can cut (close all, refuse
    new)."""

    def __init__(self, port: int) -> None:
        self.target_port = port
        self.open = True
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    def cut(self) -> None:
        self.open = False
        for writer in list(self.writers):
            writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


@server_backends
async def test_database_errors_while_taking_or_renewing_leave_no_run_by_that_node(
    db_url: str, daemons: Daemons, emulator: Emulator
) -> None:
    server_port = make_url(db_url).port
    assert server_port is not None
    await seed(db_url)
    emulator.configure(delay_ms=150)
    proxy = Proxy(server_port)
    port = await proxy.start()
    via_proxy = db_url.replace(f":{server_port}/", f":{port}/")
    try:
        proxy.open = False  # the database is away while A tries to take the lead
        a = await daemons.start(via_proxy, emulator.url, listen=True)
        await eventually(lambda: _has(a, "database not reachable"), 15, "A sees no database")
        await asyncio.sleep(2.0)
        assert await rows(db_url) == [] and await lease(db_url) is None
        status, body = await a.get("/healthz")
        assert status == 503 and "database" in body

        proxy.open = True
        await eventually(lambda: _has(a, "leader now"), 15, "A leads once the database is back")

        async def a_mid_run() -> bool:
            checks = await rows(db_url, session_check)
            return len([c for c in checks if c.status != "pending"]) >= 2

        await eventually(a_mid_run, 15, "A's run under way")
        proxy.cut()  # renewals fail from now on
        cut_at = datetime.now(UTC)
        await eventually(lambda: _has(a, "not leader (fail closed)"), 10, "A fails closed")
        status, body = await a.get("/healthz")
        assert status == 503
        b = await daemons.start(db_url, emulator.url)
        await eventually(lambda: _has(b, "leader now"), BOUND + 10, "B takes over")
        proxy.open = True  # A reconnects and finds B leading
        await asyncio.sleep(3.0)
        assert "leader now (epoch 3)" not in a.log
        assert await asyncio.gather(a.stop(), b.stop()) == [0, 0]
    finally:
        await proxy.close()
    runs = await rows(db_url)
    assert all(owner_pid(r.owner) == b.pid for r in runs if r.started_at >= cut_at), runs
    assert_every_slot_once(runs)
