"""`targets discover` and `targets sync --from authing`: pairs from Authing's directory.

discover: the chosen apps x the users of the scan become targets (new ones enabled; an
existing pair, enabled or not, is left as it is). Each page's pairs are written with the
page's cursor, so a killed discover resumes. The pairs keep no expectation of their own:
policies give them theirs (`targets list` shows it), and a policy changed later applies.

sync: the same scan into `discovery_seen`, plus every user that exists; then the diff, in
batches: proposed pairs that are not targets are added; enabled targets whose app or user
Authing no longer lists are disabled (never deleted). A second sync finds nothing to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_job.client.directory import PAGE_LIMIT, DirectoryClient
from audit_job.commands import discover
from audit_job.commands.database import open_database
from audit_job.config import LoadedConfig
from audit_job.errors import ApiError
from audit_job.limiter import AdaptiveRateLimiter
from audit_job.policy import PolicySet
from audit_job.store import discovery as store
from audit_job.store import targets as target_store

DISCOVER_SCAN = "discover"
SYNC_SCAN = "sync"
DIFF_BATCH = 1000
SHOWN_CHANGES = 20


@dataclass
class DiscoverSummary:
    apps: list[str]
    pages: int = 0
    proposed: int = 0  # pairs seen by this process (a resumed scan saw the rest before)
    added: int = 0


@dataclass
class SyncSummary:
    apps: list[str]
    dry_run: bool
    pages: int = 0
    new: int = 0
    disabled: int = 0
    gone: dict[str, int] = field(default_factory=lambda: {"user gone": 0, "app gone": 0})
    shown_new: list[tuple[str, str]] = field(default_factory=list)
    shown_gone: list[tuple[str, str, str]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def _opened(
    loaded: LoadedConfig, limiter: AdaptiveRateLimiter | None
) -> AsyncIterator[tuple[AsyncEngine, DirectoryClient]]:
    async with open_database(loaded.settings) as engine, DirectoryClient(loaded, limiter) as api:
        yield engine, api


def _spec(sel: discover.Selection, chosen: list[str]) -> dict[str, Any]:
    return {"apps": chosen, "status": sel.status, "logged_in": sel.logged_in}


async def discover_targets(
    loaded: LoadedConfig,
    sel: discover.Selection,
    *,
    dry_run: bool = False,
    emit: Callable[[list[dict[str, Any]]], None] | None = None,
    limiter: AdaptiveRateLimiter | None = None,
) -> DiscoverSummary:
    """Write (or, dry run, only `emit`) the pairs of the selection."""
    policies = PolicySet(loaded.settings.policy)
    async with _opened(loaded, limiter) as (engine, api):
        chosen = discover.match_apps(await discover.pool_apps(api), sel.globs, sel.apps_key)
        summary = DiscoverSummary(chosen)
        async with engine.connect() as conn:
            before = await target_store.count(conn)

        async def handle(conn: AsyncConnection, listing: str, users: list[dict[str, Any]]) -> None:
            apps = _apps_of(listing, chosen)
            pairs = [(app, user) for user in discover.user_ids(users) for app in apps]
            summary.proposed += len(pairs)
            if emit is not None:
                emit([_proposal(policies, app, user) for app, user in pairs])
            if not dry_run:
                await target_store.save_batch(conn, [(app, user, None) for app, user in pairs])

        names = discover.listings(chosen, sel.logged_in, every_user=False)
        if dry_run:  # nothing written, cursors included: a dry run always reads it all
            for listing in names:
                summary.pages += await _read_all(api, listing, sel.status, handle)
        else:
            summary.pages = await discover.scan(
                engine,
                api,
                DISCOVER_SCAN,
                _spec(sel, chosen),
                names,
                handle,
                server_status=sel.status,
            )
            async with engine.begin() as conn:
                await store.reset(conn, DISCOVER_SCAN)  # done: the next discover starts over
                summary.added = await target_store.count(conn) - before
    return summary


async def sync_targets(
    loaded: LoadedConfig,
    sel: discover.Selection,
    *,
    dry_run: bool = False,
    limiter: AdaptiveRateLimiter | None = None,
) -> SyncSummary:
    async with _opened(loaded, limiter) as (engine, api):
        pool = await discover.pool_apps(api)
        chosen = discover.match_apps(pool, sel.globs, sel.apps_key)
        summary = SyncSummary(chosen, dry_run)

        async def handle(conn: AsyncConnection, listing: str, users: list[dict[str, Any]]) -> None:
            seen: list[tuple[str, str]] = []
            if listing == discover.ALL_USERS:
                seen += [(store.EXISTS_MARK, user) for user in discover.user_ids(users)]
                if sel.logged_in:
                    await store.remember(conn, SYNC_SCAN, seen)
                    return
            ids = discover.user_ids(users, sel.status)
            seen += [(app, user) for user in ids for app in _apps_of(listing, chosen)]
            await store.remember(conn, SYNC_SCAN, seen)

        names = discover.listings(chosen, sel.logged_in, every_user=True)
        spec = {**_spec(sel, chosen), "pool": pool}
        # Every user must be listed (to see who is gone), so status is filtered here.
        summary.pages = await discover.scan(
            engine, api, SYNC_SCAN, spec, names, handle, server_status=None
        )
        await _apply_diff(engine, pool, summary)
    return summary


async def _apply_diff(engine: AsyncEngine, pool: list[str], summary: SyncSummary) -> None:
    async with engine.connect() as conn:
        users_seen = await store.any_user_seen(conn, SYNC_SCAN)
    if not pool or not users_seen:
        # An empty answer is likelier a wrong host or pool than a deleted directory.
        raise ApiError("Authing listed no apps or no users: nothing synced, nothing disabled")
    after: tuple[str, str] | None = None
    while True:
        async with engine.begin() as conn:
            new = await store.new_pairs(conn, SYNC_SCAN, after, DIFF_BATCH)
            if not new:
                break
            if not summary.dry_run:
                await target_store.save_batch(conn, [(app, user, None) for app, user in new])
        summary.new += len(new)
        summary.shown_new += new[: max(0, SHOWN_CHANGES - len(summary.shown_new))]
        after = new[-1]
    gone_after: tuple[str, str] | None = None
    while True:
        async with engine.begin() as conn:
            gone = await store.gone_pairs(conn, SYNC_SCAN, pool, gone_after, DIFF_BATCH)
            if not gone:
                break
            if not summary.dry_run:
                summary.disabled += await store.disable(conn, [(a, u) for a, u, _ in gone])
        for row in gone:
            summary.gone[row[2]] += 1
        summary.shown_gone += gone[: max(0, SHOWN_CHANGES - len(summary.shown_gone))]
        gone_after = (gone[-1][0], gone[-1][1])
    async with engine.begin() as conn:
        await store.reset(conn, SYNC_SCAN)


def _apps_of(listing: str, chosen: list[str]) -> list[str]:
    if listing.startswith(discover.LOGGED_IN):
        return [listing[len(discover.LOGGED_IN) :]]
    return chosen


def _proposal(policies: PolicySet, app: str, user: str) -> dict[str, Any]:
    effective = policies.effective(app, user, "any")
    return {
        "app_id": app,
        "user_id": user,
        "effective_expect": effective.expect,
        "severity": effective.severity,
        "expect_source": effective.source,
    }


async def _read_all(
    api: DirectoryClient, listing: str, status: str | None, handle: discover.PageHandler
) -> int:
    """A listing read page by page without cursors (dry run)."""
    app = listing[len(discover.LOGGED_IN) :] if listing.startswith(discover.LOGGED_IN) else None
    page = pages = 0
    while True:
        page += 1
        total, users = await api.users_page(page, status=status, logged_in_to=app)
        pages += 1
        await handle(None, listing, users)  # type: ignore[arg-type]  # dry run: no writes
        if not users or page * PAGE_LIMIT >= total:
            return pages
