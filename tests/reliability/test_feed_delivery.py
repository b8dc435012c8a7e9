"""`audit-job run` delivering its own events, as real processes, to a real webhook
receiver on loopback (tests/receiver.py: every signature verified with the Standard
Webhooks reference library): what the receiver gets is checked against the events the
committed tables imply (session_check, audit_violation, audit_run: feedsupport), not
against the feed alone.

- runs with flips and violations deliver exactly those events, each once;
- SIGKILL of runs at seeded random moments (10), then resume and `events deliver`:
  every event at least once, none unexpected, a repeat only with an id already seen;
- the receiver refusing connections, then answering 503, then hanging, then back:
  every run still succeeds, and everything arrives in order;
- a permanent 4xx stops that sink only, until `events retry`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from feedsupport import (
    SQLITE_PG,
    base_sections,
    check_received,
    cli,
    env_for,
    feed_rows,
    implied_events,
    move_truth,
    received_copies,
    seed_expectations,
    sink_config,
    webhook,
)
from receiver import ReceiverThread, new_secret
from relsupport import EmulatorThread, Processes, query


async def progress(db_url: str, hook: Any) -> int:
    """Answers written plus batches acknowledged so far."""
    ((answered,),) = await query(
        db_url, "SELECT COUNT(*) FROM session_check WHERE status <> 'pending'"
    )
    return int(answered) + len(hook.acknowledged())


def types_of(implied: Counter[Any]) -> set[str]:
    return {key[0] for key in implied}


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.pg),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
)
async def test_runs_deliver_exactly_the_events_the_tables_imply_each_once(
    db_url: str, tmp_path: Path
) -> None:
    await seed_expectations(db_url, 60)
    archive = tmp_path / "events.jsonl"
    with EmulatorThread() as emulator, ReceiverThread(new_secret()) as hook:
        config = sink_config(
            tmp_path / "c.toml",
            base_sections(db_url, emulator.url),
            [webhook("siem", hook), {"name": "archive", "type": "jsonl", "path": str(archive)}],
        )
        env = env_for(("siem", hook))
        summaries = []
        for seed in (0, 1, 2):
            move_truth(emulator, seed)
            result = cli(config, "run", "--no-progress", "--json", env=env)
            assert result.returncode == 0, result.stderr
            summaries.append(json.loads(result.stdout))
        feed = await feed_rows(db_url)
        implied = await implied_events(db_url)
        report = cli(config, "report", "--format", "json", env=env)
    assert Counter(feed.values()) == implied, "the feed is not what the tables imply"
    # `report`: each app's violations after the last run, and what that run changed
    last = summaries[-1]["run_id"]
    open_now = dict(
        await query(
            db_url,
            "SELECT app_id, COUNT(*) FROM audit_violation WHERE is_open IS NOT NULL "
            "GROUP BY app_id",
        )
    )
    for row in map(json.loads, report.stdout.splitlines()):
        app = row["app_id"]
        changed = Counter(k[0] for k in implied if k[1] == last and k[2] == app)
        assert (
            row["violations_open"],
            row["violations_opened"],
            row["violations_resolved"],
        ) == (open_now.get(app, 0), changed["violation.opened"], changed["violation.resolved"])
    assert types_of(implied) >= {
        "session.activated",
        "session.deactivated",
        "violation.opened",
        "violation.resolved",
        "run.finished",
    }
    check_received(hook, feed, exactly_once=True)
    assert [json.loads(line)["id"] for line in archive.read_text().splitlines()] == sorted(feed)
    for summary in summaries:
        assert {s["sink"]: (s["outcome"], s["pending"]) for s in summary["delivery"]} == {
            "siem": ("drained", 0),
            "archive": ("drained", 0),
        }
    # the summary's violations are the table's
    for summary in summaries:
        run_id = summary["run_id"]
        opened = sum(1 for k in implied if k[0] == "violation.opened" and k[1] == run_id)
        resolved = sum(1 for k in implied if k[0] == "violation.resolved" and k[1] == run_id)
        assert (summary["violations"]["opened"], summary["violations"]["resolved"]) == (
            opened,
            resolved,
        )
    (still_open,) = await query(
        db_url, "SELECT COUNT(*) FROM audit_violation WHERE is_open IS NOT NULL"
    )
    assert summaries[-1]["violations"]["open"] == still_open[0] > 0


@SQLITE_PG
async def test_sigkill_of_runs_at_random_moments_then_resume_loses_no_event(
    db_url: str, tmp_path: Path, procs: Processes
) -> None:
    rng = random.Random(16)
    await seed_expectations(db_url, 45)
    with (
        EmulatorThread(delay_ms=5) as emulator,
        ReceiverThread(new_secret(), delay_seconds=0.02) as hook,
    ):
        sections = base_sections(db_url, emulator.url)
        sections["audit"]["rate_per_second"] = 60  # each run checks for under a second
        config = sink_config(tmp_path / "c.toml", sections, [webhook("siem", hook)])
        env = env_for(("siem", hook))
        seed, kills = 0, 0
        while kills < 10:
            latest = await query(db_url, "SELECT id, status FROM audit_run ORDER BY id DESC")
            args = ["run", "--no-progress"]
            if latest and latest[0][1] in ("running", "interrupted"):
                args += ["--resume", str(latest[0][0])]
            else:
                seed += 1
                move_truth(emulator, seed)
            process = procs.start("--config", str(config), *args, env=env)
            # a seeded moment: after 1 to 50 more answers written or batches acknowledged
            # (checking, delivering or at the end), then within the next few milliseconds
            target = await progress(db_url, hook) + rng.randint(1, 50)
            deadline = time.monotonic() + 60
            while process.poll() is None and await progress(db_url, hook) < target:
                assert time.monotonic() < deadline, "the run made no progress"
                await asyncio.sleep(0.01)
            await asyncio.sleep(rng.uniform(0, 0.03))
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                kills += 1
            process.communicate(timeout=30)
        latest = await query(db_url, "SELECT id, status FROM audit_run ORDER BY id DESC")
        if latest[0][1] in ("running", "interrupted"):
            resumed = cli(config, "run", "--no-progress", "--resume", str(latest[0][0]), env=env)
            assert resumed.returncode == 0, resumed.stderr
        delivered = cli(config, "events", "deliver", env=env)
        assert delivered.returncode == 0, delivered.stderr
        feed = await feed_rows(db_url)
        implied = await implied_events(db_url)
    assert Counter(feed.values()) == implied, "the feed is not what the tables imply"
    assert "violation.opened" in types_of(implied) and "session.activated" in types_of(implied)
    assert len({key[1] for key in implied}) >= 3, "fewer than three runs in 10 kills"
    check_received(hook, feed, exactly_once=False)
    repeated = {i: n for i, n in received_copies(hook).items() if n > 1}
    print(f"{len(feed)} events, {len(repeated)} received more than once after 10 kills")


@SQLITE_PG
async def test_a_receiver_refusing_then_503_then_hanging_then_back_gets_all_in_order(
    db_url: str, tmp_path: Path
) -> None:
    await seed_expectations(db_url, 30)
    thread = ReceiverThread(new_secret(), hang_seconds=4)
    with EmulatorThread() as emulator, thread as hook:
        config = sink_config(
            tmp_path / "c.toml",
            base_sections(db_url, emulator.url, drain_seconds=3),
            [webhook("siem", hook)],
        )
        env = env_for(("siem", hook))
        for seed, outage in enumerate(("refusing", "503", "hang"), start=1):
            if outage == "refusing":
                thread.call(hook.stop())  # connections refused
            elif outage == "503":
                thread.call(hook.start())  # the same port again
                hook.mode = "503"
            else:
                hook.mode = "hang"
            move_truth(emulator, seed)
            result = cli(config, "run", "--no-progress", "--json", env=env)
            assert result.returncode == 0, result.stderr  # the receiver never fails a run
            (sink,) = json.loads(result.stdout)["delivery"]
            assert sink["outcome"] in ("gave_up", "stopped") and sink["pending"] != 0, sink
            assert "wait for the next run, the daemon or: audit-job events deliver" in (
                result.stderr
            )
        assert hook.acknowledged() == []
        hook.mode = "ok"
        delivered = cli(config, "events", "deliver", env=env)
        assert delivered.returncode == 0, delivered.stderr
        feed = await feed_rows(db_url)
    assert Counter(feed.values()) == await implied_events(db_url)
    check_received(hook, feed, exactly_once=True)
    assert hook.acknowledged_ids() == sorted(feed)  # in id order, from the first


@SQLITE_PG
async def test_a_permanent_refusal_stops_that_sink_only_until_retried(
    db_url: str, tmp_path: Path
) -> None:
    await seed_expectations(db_url, 30)
    with (
        EmulatorThread() as emulator,
        ReceiverThread(new_secret(), mode="400") as refusing,
        ReceiverThread(new_secret()) as good,
    ):
        config = sink_config(
            tmp_path / "c.toml",
            base_sections(db_url, emulator.url),
            [webhook("refusing", refusing), webhook("good", good)],
        )
        env = env_for(("refusing", refusing), ("good", good))
        for seed in (1, 2):
            move_truth(emulator, seed)
            result = cli(config, "run", "--no-progress", "--json", env=env)
            assert result.returncode == 0, result.stderr
            outcomes = {s["sink"]: s["outcome"] for s in json.loads(result.stdout)["delivery"]}
            assert outcomes == {"refusing": "failing", "good": "drained"}
            assert "audit-job events retry refusing" in result.stderr
        assert len(refusing.requests) == 1  # refused once, then left alone
        feed = await feed_rows(db_url)
        check_received(good, feed, exactly_once=True)
        status = cli(config, "events", "sinks", "--format", "json", env=env)
        rows = {r["name"]: r for r in map(json.loads, status.stdout.splitlines())}
        assert rows["refusing"]["failing"] and rows["refusing"]["pending"] == len(feed)
        assert not rows["good"]["failing"] and rows["good"]["pending"] == 0
        refusing.mode = "ok"
        assert cli(config, "events", "retry", "refusing", env=env).returncode == 0
        delivered = cli(config, "events", "deliver", env=env)
        assert delivered.returncode == 0, delivered.stderr
    check_received(refusing, feed, exactly_once=True)
