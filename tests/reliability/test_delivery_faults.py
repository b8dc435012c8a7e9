"""Delivery under faults of our own side: PostgreSQL taken away while the deliverer works
(a loopback proxy in front of it), and SIGTERM to `audit-job events deliver --follow`.
Nothing is lost, and nothing acknowledged-and-recorded is sent again."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pgproxy import PgProxy
from receiver import Receiver, ReceiverThread, new_secret
from relsupport import cli_env

from audit_job.config import Settings
from audit_job.events.deliver import Deliverer
from audit_job.store import events, migrate, sinks
from audit_job.store.engine import create_engine

PG_ONLY = pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.pg)])


async def append(url: str, count: int, start: int = 0) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await events.append(
                conn,
                [
                    events.NewEvent("run.finished", i, None, None, {"n": i})
                    for i in range(start, start + count)
                ],
            )
    finally:
        await engine.dispose()


async def all_ids(url: str) -> list[int]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return [r.id for r in await events.read_after(conn, 0, limit=100_000)]
    finally:
        await engine.dispose()


def repeats_are_resends(receiver: Receiver) -> int:
    """Every acknowledged batch either moves on or repeats an earlier one exactly; how
    many repeats."""
    seen: dict[str | None, list[int]] = {}
    last, repeats = 0, 0
    for request in receiver.acknowledged():
        if request.message_id in seen:
            assert seen[request.message_id] == request.ids
            repeats += 1
            continue
        assert request.ids[0] > last
        last = request.ids[-1]
        seen[request.message_id] = request.ids
    return repeats


@PG_ONLY
async def test_the_database_going_away_mid_delivery_loses_nothing(db_url: str) -> None:
    await append(db_url, 400)
    database = db_url.rsplit("/", 1)[1]
    receiver = Receiver(new_secret(), delay_seconds=0.01)
    await receiver.start()
    with PgProxy() as proxy:
        settings = Settings.model_validate(
            {
                "database": {"url": proxy.url(database)},
                "events": {"poll_seconds": 0.05, "lease_seconds": 3},
                "sink": [
                    {
                        "name": "siem",
                        "type": "webhook",
                        "url": receiver.url,
                        "secret_env": "S",
                        "batch_size": 10,
                        "timeout_seconds": 1,
                    }
                ],
            }
        )
        engine = create_engine(settings.database.url)
        stop = asyncio.Event()
        try:
            async with Deliverer(
                engine, settings, env={"S": receiver.secret}, backoff_base=0.05, backoff_cap=0.5
            ) as deliverer:
                task = asyncio.create_task(deliverer.run(stop))
                while len(receiver.acknowledged()) < 10:
                    await asyncio.sleep(0.01)
                proxy.cut()  # the database is gone, mid-delivery
                await asyncio.sleep(2.0)
                during = len(receiver.acknowledged())
                await append(db_url, 100, start=400)  # committed meanwhile, not via the proxy
                proxy.restore()
                expected = await all_ids(db_url)
                deadline = time.monotonic() + 60
                while set(receiver.acknowledged_ids()) != set(expected):
                    assert time.monotonic() < deadline, "not everything was delivered"
                    await asyncio.sleep(0.05)
                stop.set()
                await asyncio.wait_for(task, 10)
        finally:
            await engine.dispose()
            await receiver.stop()
    assert receiver.all_verified()
    # at most the batch in flight when the database went away is sent again: its
    # acknowledgement could not be recorded
    assert repeats_are_resends(receiver) <= 1
    assert during <= 11  # delivery paused while the cursor could not be recorded
    assert sorted(set(receiver.acknowledged_ids())) == expected


def test_sigterm_stops_delivery_cleanly_and_a_new_pass_goes_on(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/audit.db"

    async def setup() -> None:
        engine = create_engine(url)
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()
        await append(url, 600)

    asyncio.run(setup())
    secret = new_secret()
    with ReceiverThread(secret, delay_seconds=0.02) as receiver:
        config = tmp_path / "c.toml"
        config.write_text(
            f'[database]\nurl = "{url}"\n[[sink]]\nname = "siem"\ntype = "webhook"\n'
            f'url = "{receiver.url}"\nsecret_env = "S"\nbatch_size = 10\n',
            encoding="utf-8",
        )
        config.chmod(0o600)
        env = cli_env(S=secret)
        base = [sys.executable, "-m", "audit_job", "--config", str(config), "events", "deliver"]
        follower = subprocess.Popen(
            [*base, "--follow"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while len(receiver.acknowledged()) < 15 and time.monotonic() < deadline:
            time.sleep(0.01)
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=20)
        assert follower.returncode == 0, err
        stopped_at = len(receiver.acknowledged())
        assert stopped_at < 60  # it stopped, it did not drain everything first
        finished = subprocess.run(
            base, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert finished.returncode == 0, finished.stderr
        expected = asyncio.run(all_ids(url))
        assert receiver.acknowledged_ids() == expected  # each once: SIGTERM left no gap, no repeat
        assert repeats_are_resends(receiver) == 0
        state = asyncio.run(_state(url))
        assert (
            state is not None and state.last_event_id == expected[-1] and state.lease_owner is None
        )
        assert json.loads(json.dumps(receiver.events[expected[0]]))["type"] == "run.finished"


async def _state(url: str) -> sinks.SinkState | None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await sinks.get(conn, "siem")
    finally:
        await engine.dispose()
