"""The event feed's commands: deliver, list (and follow), retry a failing sink, sink status,
prune delivered events."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.commands.database import open_database
from audit_job.commands.report import parse_time
from audit_job.config import Settings, WebhookSinkSettings
from audit_job.config.sinks import EVENT_TYPES, mask_webhook_url, resolve_types
from audit_job.errors import ConfigError, NotFound
from audit_job.events import envelope
from audit_job.events.deliver import Deliverer, SinkReport
from audit_job.store import events as event_store
from audit_job.store import sinks as sink_store
from audit_job.store.types import utcnow

log = logging.getLogger(__name__)
PRUNE_BATCH = 5000
SINK_COLUMNS = [
    "name",
    "type",
    "target",
    "cursor",
    "pending",
    "failing",
    "delivered",
    "delivered_at",
    "failures",
    "retries",
    "last_error",
    "last_error_at",
    "lease_owner",
]


async def deliver(
    settings: Settings,
    *,
    follow: bool = False,
    stop: asyncio.Event | None = None,
    env: Mapping[str, str] | None = None,
    **options: Any,
) -> list[SinkReport]:
    """One pass over every sink, or (follow) until `stop` is set."""
    if not settings.sink:
        raise ConfigError("no [[sink]] is configured: nothing to deliver to")
    async with (
        open_database(settings) as engine,
        Deliverer(engine, settings, env=env, **options) as deliverer,
    ):
        if not follow:
            return await deliverer.drain_once()
        await deliverer.run(stop or asyncio.Event())
        return []


def parse_types(values: list[str] | None) -> frozenset[str] | None:
    """`--type` values (types or globs) as the set of types they name; None: all."""
    if not values:
        return None
    chosen: set[str] = set()
    for value in values:
        matched = resolve_types([value])
        if not matched:
            raise ConfigError(
                f"--type: {value!r} matches no event type (known: {', '.join(EVENT_TYPES)})"
            )
        chosen |= matched
    return frozenset(chosen)


@dataclass(frozen=True)
class Since:
    after_id: int | None = None
    at: datetime | None = None


def parse_since(text: str | None) -> Since:
    """`--since`: an event id (events after it) or a time (events created at or after it)."""
    if text is None:
        return Since()
    if re.fullmatch(r"\d+", text.strip()):
        return Since(after_id=int(text))
    return Since(at=parse_time(text, option="--since"))


async def listing(
    settings: Settings,
    *,
    since: Since | None = None,
    types: frozenset[str] | None = None,
    follow: bool = False,
    poll_seconds: float | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Events in id order as sinks receive them; with `follow`, then new ones as they
    are committed, until cancelled."""
    poll = poll_seconds or settings.events.poll_seconds
    since = since or Since()
    async with open_database(settings) as engine:
        after = since.after_id or 0
        if since.at is not None:
            async with engine.connect() as conn:
                after = await event_store.first_id_since(conn, since.at)
        while True:
            async with engine.connect() as conn:
                rows = await event_store.read_after(conn, after, types=types)
            for row in rows:
                yield envelope.envelope(row)
            if rows:
                after = rows[-1].id
                if len(rows) == event_store.READ_PAGE:
                    continue
            if not follow:
                return
            await asyncio.sleep(poll)


async def retry(settings: Settings, name: str) -> sink_store.SinkState:
    """Let a failing sink deliver again, from its cursor (the refused batch first)."""
    configured = {sink.name for sink in settings.sink}
    if name not in configured:
        known = ", ".join(sorted(configured)) or "none configured"
        raise NotFound(f"events retry: no sink named {name!r} in the configuration ({known})")
    async with open_database(settings) as engine, engine.begin() as conn:
        await sink_store.ensure(conn, [name])
        await sink_store.clear_failing(conn, name)
        state = await sink_store.get(conn, name)
    assert state is not None
    return state


async def sink_rows(settings: Settings) -> list[dict[str, Any]]:
    """Every configured sink (and any the database still knows): cursor, pending, health."""
    async with open_database(settings) as engine, engine.connect() as conn:
        known = await sink_store.states(conn)
        head = await event_store.head(conn)
        rows = []
        for sink in settings.sink:
            state = known.pop(sink.name, None)
            cursor = state.last_event_id if state else 0
            types = sink.event_types
            rows.append(
                _sink_row(
                    sink.name,
                    sink.type,
                    mask_webhook_url(sink.url)
                    if isinstance(sink, WebhookSinkSettings)
                    else sink.path,
                    state,
                    await event_store.count_after(
                        conn,
                        cursor,
                        upto_id=head,
                        types=None if types >= frozenset(EVENT_TYPES) else types,
                    ),
                )
            )
        for name, state in known.items():
            rows.append(_sink_row(name, "(not configured)", None, state, None))
    return rows


def _sink_row(
    name: str,
    kind: str,
    target: str | None,
    state: sink_store.SinkState | None,
    pending: int | None,
) -> dict[str, Any]:
    return {
        "name": name,
        "type": kind,
        "target": target,
        "cursor": state.last_event_id if state else 0,
        "pending": pending,
        "failing": state.failing if state else False,
        "delivered": state.delivered if state else 0,
        "delivered_at": state.delivered_at if state else None,
        "failures": state.failures if state else 0,
        "retries": state.retries if state else 0,
        "last_error": state.last_error if state else None,
        "last_error_at": state.last_error_at if state else None,
        "lease_owner": state.lease_owner if state else None,
    }


async def pending_counts(conn: Any, settings: Settings) -> dict[str, int]:
    """Events each configured sink has yet to deliver: the `audit_job_events_pending`
    gauge."""
    known = await sink_store.states(conn)
    head = await event_store.head(conn)
    counts = {}
    for sink in settings.sink:
        state = known.get(sink.name)
        types = sink.event_types
        counts[sink.name] = await event_store.count_after(
            conn,
            state.last_event_id if state else 0,
            upto_id=head,
            types=None if types >= frozenset(EVENT_TYPES) else types,
        )
    return counts


@dataclass
class EventPrune:
    cutoff: datetime
    upto_id: int
    deleted: int


async def prune(
    engine: AsyncEngine,
    settings: Settings,
    *,
    keep_days: int | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    batch: int = PRUNE_BATCH,
) -> EventPrune:
    """Delete events older than `keep_days` ([events] keep_days) that every configured
    sink has delivered; never an undelivered one, never the newest (so that no id is
    ever handed out twice, whatever the database does with its counter)."""
    days = keep_days if keep_days is not None else settings.events.keep_days
    if days < 1:
        raise ConfigError(f"--keep-days: must be an integer >= 1, got {days}")
    cutoff = (now or utcnow()) - timedelta(days=days)
    async with engine.connect() as conn:
        head = await event_store.head(conn)
        lowest = await sink_store.lowest_cursor(conn, [s.name for s in settings.sink])
    upto = min(head - 1, head if lowest is None else lowest)
    deleted = 0
    if upto > 0 and not dry_run:
        while True:
            async with engine.begin() as conn:
                removed = await event_store.prune_batch(
                    conn, before=cutoff, upto_id=upto, batch=batch
                )
            deleted += removed
            if removed < batch:
                break
    elif upto > 0:
        async with engine.connect() as conn:
            deleted = await event_store.count_before(conn, before=cutoff, upto_id=upto)
    log.info(
        "%s %d events created before %s",
        "would delete" if dry_run else "deleted",
        deleted,
        cutoff.isoformat(),
        extra={"event": "events_pruned"},
    )
    return EventPrune(cutoff, upto, deleted)


async def prune_configured(settings: Settings, keep_days: int | None, dry_run: bool) -> EventPrune:
    async with open_database(settings) as engine:
        return await prune(engine, settings, keep_days=keep_days, dry_run=dry_run)
