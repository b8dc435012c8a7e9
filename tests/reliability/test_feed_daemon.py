"""The daemon's delivery, as real processes against a real webhook receiver on loopback:
only the leader delivers; SIGKILL of the leader in the middle of delivery hands it to
the next leader with nothing lost (at least once, a repeat only with an id already
seen); /metrics and /healthz show violations, pending events and a failing sink."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from feedsupport import (
    SQLITE_PG,
    base_sections,
    check_received,
    cli,
    env_for,
    feed_rows,
    implied_events,
    seed_expectations,
    sink_config,
    webhook,
)
from receiver import ReceiverThread, new_secret
from relsupport import EmulatorThread, Processes, query

from audit_job.store import events
from audit_job.store.engine import create_engine

BACKLOG = 150
BACKLOG_KEY = ("slot.missed", None, None, None)  # no real slot event lacks its run row


async def append_backlog(db_url: str, count: int) -> None:
    """Events already waiting when the daemon starts, so that it is mid-delivery when
    it is killed."""
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await events.append(
                conn,
                [events.NewEvent(BACKLOG_KEY[0], None, None, None, {"n": i}) for i in range(count)],
            )
    finally:
        await engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def daemon_config(
    tmp_path: Path,
    name: str,
    db_url: str,
    emulator_url: str,
    sinks: list[dict[str, Any]],
    port: int | None = None,
) -> Path:
    sections = base_sections(db_url, emulator_url)
    sections["schedule"] = {"interval_seconds": 1}
    sections["daemon"] = {"lease_seconds": 3, **({"listen": f"127.0.0.1:{port}"} if port else {})}
    return sink_config(tmp_path / f"{name}.toml", sections, sinks)


def wait_for(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.05)


def log_of(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


@SQLITE_PG
async def test_sigkill_of_the_delivering_leader_hands_delivery_over_losing_nothing(
    backend: str, db_url: str, tmp_path: Path, procs: Processes
) -> None:
    await seed_expectations(db_url, 24)
    await append_backlog(db_url, BACKLOG)
    with EmulatorThread() as emulator, ReceiverThread(new_secret(), delay_seconds=0.03) as hook:
        env = env_for(("siem", hook))
        sinks = [webhook("siem", hook, batch_size=3)]
        logs = {name: tmp_path / f"{name}.log" for name in ("a", "b")}
        configs = {
            name: daemon_config(tmp_path, name, db_url, emulator.url, sinks) for name in logs
        }

        def start(name: str) -> Any:
            return procs.start("--config", str(configs[name]), "daemon", env=env, output=logs[name])

        a = start("a")
        wait_for(lambda: "leader now" in log_of(logs["a"]), 20, "A leads")
        b = start("b") if backend != "sqlite" else None  # SQLite: one daemon per file
        wait_for(lambda: len(hook.acknowledged()) >= 10, 30, "A delivering")
        assert len(hook.acknowledged_ids()) < BACKLOG, "A was done before it could be killed"
        os.killpg(a.pid, signal.SIGKILL)
        a.wait(timeout=10)
        if b is not None:
            assert "delivering events as the leader" not in log_of(logs["b"]), "a follower sent"
        else:
            b = start("b")
        wait_for(lambda: "leader now" in log_of(logs["b"]), 20, "B takes over")
        assert "delivering events as the leader" in log_of(logs["a"])

        async def b_caught_up() -> bool:
            feed = await feed_rows(db_url)
            runs = await query(db_url, "SELECT COUNT(*) FROM audit_run WHERE status = 'succeeded'")
            return set(hook.acknowledged_ids()) >= set(feed) and runs[0][0] >= 3

        deadline = time.monotonic() + 60
        while not await b_caught_up():
            assert time.monotonic() < deadline, "B did not deliver the backlog and its runs"
            await asyncio.sleep(0.2)
        b.send_signal(signal.SIGTERM)
        assert b.wait(timeout=30) == 0, log_of(logs["b"])[-2000:]
        # what B's last (interrupted) run appended after its last pass is still pending
        delivered = cli(configs["b"], "events", "deliver", env=env)
        assert delivered.returncode == 0, delivered.stderr
        feed = await feed_rows(db_url)
        implied = await implied_events(db_url)
    check_received(hook, feed, exactly_once=False)
    backlog = Counter({BACKLOG_KEY: BACKLOG})
    assert Counter(feed.values()) - backlog == implied and Counter(feed.values()) >= backlog


def metric(text: str, name: str, labels: str) -> float:
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert found, f"{name}{labels} not in /metrics"
    return float(found.group(1))


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


@SQLITE_PG
async def test_metrics_and_healthz_show_violations_pending_events_and_a_failing_sink(
    db_url: str, tmp_path: Path, procs: Processes
) -> None:
    await seed_expectations(db_url, 30)
    port = free_port()
    with EmulatorThread() as emulator, ReceiverThread(new_secret(), mode="400") as refusing:
        env = env_for(("refusing", refusing))
        archive = tmp_path / "events.jsonl"
        config = daemon_config(
            tmp_path,
            "d",
            db_url,
            emulator.url,
            [
                webhook("refusing", refusing),
                {"name": "archive", "type": "jsonl", "path": str(archive)},
            ],
            port,
        )
        log = tmp_path / "d.log"
        daemon = procs.start("--config", str(config), "daemon", env=env, output=log)
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = await get(port, "/healthz")
                if body.startswith("degraded"):
                    break
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, "no degraded /healthz"
            await asyncio.sleep(0.2)
        assert status == 200 and "sink refusing failing" in body and "archive" not in body
        assert refusing.url not in body and str(refusing.port) not in body
        # The sink may fail on the first run's start event, before any answer opened a
        # violation: scrape once the runs have opened some.
        while True:
            _, text = await get(port, "/metrics")
            if re.search(r"^audit_job_open_violations\{.*\} [1-9]", text, re.M):
                break
            assert time.monotonic() < deadline + 30, "no open violation in /metrics"
            await asyncio.sleep(0.2)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert metric(text, "audit_job_sink_failing", '{sink="refusing"}') == 1
    assert metric(text, "audit_job_sink_failing", '{sink="archive"}') == 0
    assert metric(text, "audit_job_events_pending", '{sink="refusing"}') >= 1
    assert metric(text, "audit_job_events_pending", '{sink="archive"}') >= 0
    counts = await query(
        db_url,
        "SELECT app_id, severity, COUNT(*) FROM audit_violation GROUP BY app_id, severity",
    )
    assert counts, "the runs opened no violation"
    shown = {
        (app, severity): metric(
            text, "audit_job_open_violations", f'{{app_id="{app}",severity="{severity}"}}'
        )
        for app, severity, _n in counts
    }
    assert all(n >= 1 for n in shown.values()), shown  # open at scrape time, none resolved
    assert sum(shown.values()) <= sum(n for *_, n in counts)
