"""Delivery through real parts: the deliverer against a real aiohttp receiver on loopback
(every signature verified by the reference library) and a real file, the feed in SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from receiver import Receiver, new_secret
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.commands import events as event_commands
from audit_job.config import Settings
from audit_job.events.deliver import Deliverer
from audit_job.models import EventType
from audit_job.store import events, sinks
from audit_job.store.engine import create_engine

TYPES = [EventType.RUN_FINISHED, EventType.VIOLATION_OPENED, EventType.SESSION_ACTIVATED]


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver(new_secret())
    await receiver.start()
    yield receiver
    await receiver.stop()


def settings_for(db_url: str, *sink_blocks: dict[str, Any], **events_section: Any) -> Settings:
    return Settings.model_validate(
        {
            "database": {"url": db_url},
            "events": {"poll_seconds": 0.05, **events_section},
            "sink": list(sink_blocks),
        }
    )


def webhook(name: str, receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "webhook",
        "url": receiver.url,
        "secret_env": f"SECRET_{name.upper()}",
        "timeout_seconds": 0.5,
        "max_attempts": 3,
        **extra,
    }


def env_for(*receivers: tuple[str, Receiver]) -> dict[str, str]:
    return {f"SECRET_{name.upper()}": r.secret for name, r in receivers}


async def append(engine: AsyncEngine, count: int, start: int = 0) -> None:
    async with engine.begin() as conn:
        await events.append(
            conn,
            [
                events.NewEvent(TYPES[i % 3].value, i, "app", f"u{i}", {"n": i})
                for i in range(start, start + count)
            ],
        )


async def table_ids(engine: AsyncEngine, types: frozenset[str] | None = None) -> list[int]:
    async with engine.connect() as conn:
        return [r.id for r in await events.read_after(conn, 0, limit=100_000, types=types)]


def deliverer(engine: AsyncEngine, settings: Settings, env: dict[str, str]) -> Deliverer:
    return Deliverer(engine, settings, env=env, backoff_base=0.05, backoff_cap=0.3)


async def test_every_event_once_in_id_order(
    engine: AsyncEngine, db_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    for batch in range(5):
        await append(engine, 53, start=batch * 53)
    path = tmp_path / "events.jsonl"
    settings = settings_for(
        db_url,
        webhook("siem", receiver, batch_size=40),
        {"name": "archive", "type": "jsonl", "path": str(path), "batch_size": 100},
    )
    async with deliverer(engine, settings, env_for(("siem", receiver))) as d:
        reports = {r.name: r for r in await d.drain_once()}
        again = {r.name: r for r in await d.drain_once()}
    expected = await table_ids(engine)
    assert len(expected) == 265
    assert receiver.all_verified() and receiver.acknowledged_ids() == expected
    assert all(len(r.ids) <= 40 for r in receiver.requests)
    assert len({r.message_id for r in receiver.requests}) == len(receiver.requests)
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == expected
    assert reports["siem"].outcome == "drained" and reports["siem"].delivered == 265
    assert reports["siem"].cursor == expected[-1] and reports["siem"].pending == 0
    assert again["siem"].delivered == 0 and again["archive"].delivered == 0
    assert len(receiver.requests) == 7  # ceil(265 / 40): nothing sent twice
    # what the receiver got is the table, field for field
    async with engine.connect() as conn:
        first = (await events.read_after(conn, 0, limit=1))[0]
    assert receiver.events[first.id] == {
        "id": first.id,
        "type": "run.finished",
        "created_at": events.iso(first.created_at),
        "run_id": 0,
        "app_id": "app",
        "user_id": "u0",
        "data": {"n": 0},
    }


async def test_outages_lose_nothing_and_repeat_only_unacknowledged_batches(
    engine: AsyncEngine, db_url: str, receiver: Receiver
) -> None:
    """Refused connections, then 503s, then a receiver that hangs, then back: every event
    arrives, in id order, and acknowledged batches are never sent again."""
    settings = settings_for(db_url, webhook("siem", receiver, batch_size=25))
    stop = asyncio.Event()
    await receiver.stop()  # refusing connections
    async with deliverer(engine, settings, env_for(("siem", receiver))) as d:
        task = asyncio.create_task(d.run(stop))
        await append(engine, 30)
        await asyncio.sleep(1.0)
        await receiver.start()
        receiver.mode = "503"
        await append(engine, 30, start=30)
        d.wake()
        await asyncio.sleep(1.5)
        receiver.mode = "hang"
        await append(engine, 30, start=60)
        await asyncio.sleep(1.5)
        receiver.mode = "ok"
        await append(engine, 30, start=90)
        d.wake()
        expected = await table_ids(engine)
        deadline = time.monotonic() + 30
        while receiver.acknowledged_ids() != expected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 10)
    assert len(expected) == 120
    assert receiver.all_verified()
    assert receiver.acknowledged_ids() == expected  # each once, in id order
    answered = {r.answered for r in receiver.requests}
    assert {503, None, 200} <= answered  # the outage really happened, each kind of it
    # a batch sent again was never acknowledged before: same id, same content
    seen: dict[str, list[int]] = {}
    for request in receiver.requests:
        if request.message_id in seen:
            assert seen[request.message_id] == request.ids
        seen[str(request.message_id)] = request.ids
    async with engine.connect() as conn:
        state = await sinks.get(conn, "siem")
    assert state is not None and state.last_event_id == expected[-1] and state.retries > 0


async def test_a_permanent_refusal_stops_that_sink_only_until_retried(
    engine: AsyncEngine, db_url: str, receiver: Receiver
) -> None:
    other = Receiver(new_secret())
    await other.start()
    try:
        await append(engine, 12)
        settings = settings_for(
            db_url, webhook("broken", receiver, batch_size=5), webhook("fine", other, batch_size=5)
        )
        env = env_for(("broken", receiver), ("fine", other))
        receiver.mode = "400"
        async with deliverer(engine, settings, env) as d:
            reports = {r.name: r for r in await d.drain_once()}
            assert reports["broken"].outcome == "failing" and "HTTP 400" in str(
                reports["broken"].error
            )
            assert reports[
                "fine"
            ].outcome == "drained" and other.acknowledged_ids() == await table_ids(engine)
            assert len(receiver.requests) == 1  # a permanent answer is not retried
            # failing: nothing is sent, however often it is asked
            await append(engine, 3, start=12)
            reports = {r.name: r for r in await d.drain_once()}
            assert reports["broken"].outcome == "failing" and len(receiver.requests) == 1
            assert reports["broken"].pending == 15
            assert other.acknowledged_ids() == await table_ids(engine)
            receiver.mode = "ok"
            await event_commands.retry(settings, "broken")
            reports = {r.name: r for r in await d.drain_once()}
        assert reports["broken"].outcome == "drained"
        # resumes with the batch it refused: nothing skipped, nothing twice
        assert receiver.acknowledged_ids() == await table_ids(engine)
        assert receiver.requests[0].ids == receiver.requests[1].ids
        async with engine.connect() as conn:
            state = await sinks.get(conn, "broken")
        assert state is not None and state.failures == 1 and not state.failing
    finally:
        await other.stop()


async def test_a_types_filter_skips_events_and_still_moves_past_them(
    engine: AsyncEngine, db_url: str, receiver: Receiver
) -> None:
    await append(engine, 30)
    settings = settings_for(
        db_url, webhook("violations", receiver, types=["violation.*"], batch_size=4)
    )
    async with deliverer(engine, settings, env_for(("violations", receiver))) as d:
        (report,) = await d.drain_once()
    wanted = await table_ids(engine, frozenset({"violation.opened", "violation.resolved"}))
    assert receiver.acknowledged_ids() == wanted and len(wanted) == 10
    everything = await table_ids(engine)
    assert report.cursor == everything[-1] and report.pending == 0
    assert {e["type"] for e in receiver.events.values()} == {"violation.opened"}


async def test_the_jsonl_file_holds_each_event_once_after_a_crash(
    engine: AsyncEngine, db_url: str, tmp_path: Path
) -> None:
    """A crash may leave a torn last line and lines whose delivery was not recorded:
    the next pass cuts the torn tail and writes every event once."""
    await append(engine, 20)
    path = tmp_path / "feed.jsonl"
    settings = settings_for(
        db_url, {"name": "file", "type": "jsonl", "path": str(path), "batch_size": 8}
    )
    ids = await table_ids(engine)
    async with engine.connect() as conn:
        rows = await events.read_after(conn, 0)
    from audit_job.events import envelope

    # as left by a process killed after writing events 1-12 but recording only 1-8, in
    # the middle of writing event 13
    path.write_bytes(b"".join(envelope.line(r) for r in rows[:12]) + envelope.line(rows[12])[:17])
    async with engine.begin() as conn:
        await sinks.ensure(conn, ["file"])
        owner = sinks.new_owner()
        await sinks.acquire(conn, "file", owner, 30)
        await sinks.advance(conn, "file", owner, from_id=0, to_id=ids[7], delivered=8)
        await sinks.release(conn, "file", owner)
    async with deliverer(engine, settings, {}) as d:
        (report,) = await d.drain_once()
    assert report.outcome == "drained" and report.cursor == ids[-1]
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ids


async def test_the_sinks_listing_and_pending_counts(
    engine: AsyncEngine, db_url: str, receiver: Receiver
) -> None:
    await append(engine, 9)
    settings = settings_for(
        db_url, webhook("siem", receiver, types=["run.*"]), webhook("all", receiver)
    )
    async with engine.connect() as conn:
        assert await event_commands.pending_counts(conn, settings) == {"siem": 3, "all": 9}
    rows = {r["name"]: r for r in await event_commands.sink_rows(settings)}
    assert (
        rows["siem"]["pending"] == 3 and rows["all"]["cursor"] == 0 and not rows["all"]["failing"]
    )
    assert rows["siem"]["target"] == receiver.url


async def test_the_readme_receiver_snippet_verifies_a_real_delivery(
    engine: AsyncEngine, db_url: str
) -> None:
    """The README's `verify` as a receiver's handler (an aiohttp server on loopback): it
    accepts every batch the deliverer sends, returns the events, and refuses a tampered
    body, a wrong secret and a stale timestamp."""
    from aiohttp import web
    from helpers import readme_verify

    verify = readme_verify()
    secret, seen, refused = new_secret(), [], []
    captured: list[tuple[dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        captured.append((headers, body))
        try:
            seen.extend(event["id"] for event in verify(secret, headers, body))
        except ValueError as exc:
            refused.append(str(exc))
            return web.Response(status=401)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        await append(engine, 12)
        hook = {
            "name": "readme",
            "type": "webhook",
            "url": f"http://127.0.0.1:{port}/hooks",
            "secret_env": "SECRET_README",
            "batch_size": 5,
        }
        settings = settings_for(db_url, hook)
        async with deliverer(engine, settings, {"SECRET_README": secret}) as d:
            (report,) = await d.drain_once()
    finally:
        await runner.cleanup()
    assert (report.outcome, report.delivered, refused) == ("drained", 12, [])
    assert seen == await table_ids(engine) and len(captured) == 3
    headers, body = captured[0]
    for bad_secret, bad_headers, bad_body, problem in (
        (secret, headers, body + b" ", "no valid signature"),
        (new_secret(), headers, body, "no valid signature"),
        (secret, {**headers, "webhook-timestamp": str(int(time.time()) - 3600)}, body, "too old"),
    ):
        with pytest.raises(ValueError, match=problem):
            verify(bad_secret, bad_headers, bad_body)
