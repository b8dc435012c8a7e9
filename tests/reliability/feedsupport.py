"""What the event-delivery process tests share: the events the tables imply (computed
from session_check, audit_violation and audit_run, independently of audit_event), the
feed's own rows, configs with sinks, and the checks on what a receiver got."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from receiver import Receiver
from relsupport import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    EmulatorThread,
    cli_env,
    execute,
    make_pairs,
    query,
    seed_targets,
)


async def seed_expectations(db_url: str, count: int) -> None:
    """A third of the pairs expected inactive, a third active: with the emulator's truth
    about half active, violations open, and resolve when the truth moves."""
    await seed_targets(db_url, make_pairs(count, apps=3))
    third = f"user-{count // 3:06d}"
    two_thirds = f"user-{2 * count // 3:06d}"
    await execute(db_url, f"UPDATE audit_target SET expect = 'inactive' WHERE user_id < '{third}'")
    await execute(
        db_url, f"UPDATE audit_target SET expect = 'active' WHERE user_id >= '{two_thirds}'"
    )


def move_truth(emulator: EmulatorThread, seed: int) -> None:
    """A new seed: about half the sessions flip."""

    async def configure() -> None:
        assert emulator.emulator is not None
        emulator.emulator.configure(seed=seed)

    emulator._call(configure())


SQLITE_PG = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)]
)
Key = tuple[str, int | None, str | None, str | None]  # type, run, app, user


async def implied_events(db_url: str) -> Counter[Key]:
    """Every event the committed tables imply: a flip for each conclusive answer that
    differs from the pair's previous conclusive one, each violation's opening (and
    resolution), each ended run's run.finished / run.failed, each slot row's slot.missed
    or slot.skipped."""
    implied: Counter[Key] = Counter()
    checks = await query(
        db_url,
        "SELECT run_id, app_id, user_id, status FROM session_check "
        "WHERE status IN ('active', 'inactive') ORDER BY app_id, user_id, run_id",
    )
    previous: dict[tuple[str, str], str] = {}
    for run_id, app, user, status in checks:
        before = previous.get((app, user))
        if before is not None and before != status:
            kind = "session.activated" if status == "active" else "session.deactivated"
            implied[(kind, run_id, app, user)] += 1
        previous[(app, user)] = status
    for opened, resolved, app, user in await query(
        db_url, "SELECT opened_run_id, resolved_run_id, app_id, user_id FROM audit_violation"
    ):
        implied[("violation.opened", opened, app, user)] += 1
        if resolved is not None:
            implied[("violation.resolved", resolved, app, user)] += 1
    ended = {
        "succeeded": "run.finished",
        "completed_with_errors": "run.finished",
        "failed": "run.failed",
        "missed": "slot.missed",
        "skipped_overlap": "slot.skipped",
    }
    for run_id, status in await query(db_url, "SELECT id, status FROM audit_run"):
        if status in ended:
            implied[(ended[status], run_id, None, None)] += 1
    return implied


async def feed_rows(db_url: str) -> dict[int, Key]:
    rows = await query(
        db_url, "SELECT id, type, run_id, app_id, user_id FROM audit_event ORDER BY id"
    )
    return {int(i): (t, r, a, u) for i, t, r, a, u in rows}


def key_of(event: dict[str, Any]) -> Key:
    return (event["type"], event["run_id"], event["app_id"], event["user_id"])


def received_copies(receiver: Receiver) -> dict[int, int]:
    """How many acknowledged copies of each event id the receiver got."""
    return dict(Counter(receiver.acknowledged_ids()))


def check_received(receiver: Receiver, feed: dict[int, Key], *, exactly_once: bool) -> None:
    """Every feed event acknowledged (once, or at least once), none the feed lacks, each id
    always with the same content, each batch in id order, and nothing delivered out of
    order: an id below the highest acknowledged is always a repeat."""
    assert receiver.all_verified(), "a request failed signature verification"
    copies = received_copies(receiver)
    assert set(copies) == set(feed), (
        f"missing {sorted(set(feed) - set(copies))[:10]}, "
        f"unexpected {sorted(set(copies) - set(feed))[:10]}"
    )
    for event_id, event in receiver.events.items():
        assert key_of(event) == feed[event_id], f"event {event_id} differs from its row"
    if exactly_once:
        assert all(n == 1 for n in copies.values()), {i: n for i, n in copies.items() if n > 1}
    highest, seen = 0, set()
    for request in receiver.acknowledged():
        assert request.ids == sorted(request.ids), "a batch out of id order"
        # A batch may start again below the highest id acknowledged (its acknowledgement
        # was not recorded before a kill), and then carry newer events too; what it repeats
        # was all acknowledged before: nothing below `highest` is new.
        repeated = {i for i in request.ids if i <= highest}
        assert repeated <= seen, f"a batch went back to unseen ids {sorted(repeated - seen)[:10]}"
        seen.update(request.ids)
        highest = max(highest, request.ids[-1])


def sink_config(path: Path, base: dict[str, Any], sinks: list[dict[str, Any]]) -> Path:
    """The base config (relsupport.config_file's sections) with `[[sink]]` blocks."""
    from helpers import toml_value, write_config

    write_config(path, base)
    with path.open("a", encoding="utf-8") as handle:
        for sink in sinks:
            handle.write("\n[[sink]]\n")
            for key, value in sink.items():
                handle.write(f"{key} = {toml_value(value)}\n")
    return path


def base_sections(db_url: str, emulator_url: str, **events: Any) -> dict[str, Any]:
    return {
        "database": {"url": db_url, "connect_timeout_seconds": 3},
        "authing": {
            "host": emulator_url,
            "access_key_id": DEFAULT_ACCESS_KEY_ID,
            "access_key_secret": DEFAULT_ACCESS_KEY_SECRET,
            "timeout_seconds": 3,
        },
        "audit": {
            "concurrency": 4,
            "rate_per_second": 400,
            "batch_size": 5,
            "heartbeat_seconds": 0.5,
            "dead_after_seconds": 2,
        },
        "events": {"poll_seconds": 0.2, "lease_seconds": 3, **events},
    }


def webhook(name: str, receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "webhook",
        "url": receiver.url,
        "secret_env": f"HOOK_{name.upper()}",
        "batch_size": 7,
        "timeout_seconds": 1,
        "max_attempts": 3,
        **extra,
    }


def env_for(*sinks: tuple[str, Receiver]) -> dict[str, str]:
    return cli_env(**{f"HOOK_{name.upper()}": r.secret for name, r in sinks})


def cli(config: Path, *args: str, env: dict[str, str], timeout: float = 120) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "audit_job", "--config", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
