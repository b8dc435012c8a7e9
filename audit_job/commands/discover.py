"""Pairs from Authing itself: which apps (globs over appId) and users (a status, or only
those who ever logged in to the app) make a scan, and the scan, page by page.

A scan walks one or more listings of list-users, 50 users a page, oldest first. Each page
is handled and its listing's cursor saved in one transaction, so a killed scan resumes at
its last committed page (read again: a user removed meanwhile shifts later users one place
back, and the overlap catches up to a page of such shifts). Only one page is in memory.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_job.client.directory import PAGE_LIMIT, DirectoryClient
from audit_job.config import Settings
from audit_job.config.discovery import check_status
from audit_job.errors import ConfigError
from audit_job.store import discovery as store

log = logging.getLogger(__name__)
ALL_USERS = "users"  # the listing of every user (a status filter applied to it, if any)
LOGGED_IN = "logged-in:"  # + app id: users who ever logged in to that app
SHOWN_APPS = 10

# handle(conn, listing, users of one page) inside the page's transaction
PageHandler = Callable[[AsyncConnection, str, list[dict[str, Any]]], Awaitable[None]]


@dataclass(frozen=True)
class Selection:
    globs: tuple[str, ...]
    status: str | None
    logged_in: bool
    apps_key: str = "--apps"  # where the globs come from, for messages


def selection(
    settings: Settings, apps: Sequence[str] | None, status: str | None, logged_in: bool | None
) -> Selection:
    """Options given on the command line win over `[discovery]`."""
    config = settings.discovery
    globs = tuple(apps) if apps else tuple(config.apps)
    for glob in globs:
        if not glob.strip():
            raise ConfigError("--apps: an empty glob; give an app id or a glob like 'app-*'")
    chosen = status if status is not None else config.status
    try:
        check_status(chosen)
    except ValueError as exc:
        raise ConfigError(f"--status: {exc}") from None
    logged = config.logged_in if logged_in is None else logged_in
    return Selection(globs, chosen, logged, "--apps" if apps else "[discovery] apps")


async def pool_apps(api: DirectoryClient) -> list[str]:
    """Every app id list-applications shows, in its order."""
    found: list[str] = []
    async for app in api.applications():
        app_id = app.get("appId")
        if isinstance(app_id, str) and app_id and app_id not in found:
            found.append(app_id)
    return found


def match_apps(app_ids: Sequence[str], globs: Sequence[str], key: str = "--apps") -> list[str]:
    """The apps the globs match (case-sensitive); a glob that matches none is an error."""
    chosen: list[str] = []
    for glob in globs:
        hits = [a for a in app_ids if fnmatch.fnmatchcase(a, glob)]
        if not hits:
            known = ", ".join(app_ids[:SHOWN_APPS]) + (" ..." if len(app_ids) > SHOWN_APPS else "")
            raise ConfigError(
                f"{key} {glob!r}: matches no app in Authing ({len(app_ids)} apps: "
                f"{known or 'none'})"
            )
        chosen += [a for a in hits if a not in chosen]
    return chosen


def user_ids(users: list[dict[str, Any]], status: str | None = None) -> list[str]:
    return [
        u["userId"]
        for u in users
        if isinstance(u.get("userId"), str)
        and u["userId"]
        and (status is None or u.get("status") == status)
    ]


def listings(chosen: Sequence[str], logged_in: bool, every_user: bool) -> list[str]:
    """The listings a scan walks: every user (needed by sync to see who exists), and one
    per app when only users who logged in to it count."""
    names = [ALL_USERS] if every_user or not logged_in else []
    if logged_in:
        names += [LOGGED_IN + app for app in chosen]
    return names


async def scan(
    engine: AsyncEngine,
    api: DirectoryClient,
    name: str,
    spec: dict[str, Any],
    names: Sequence[str],
    handle: PageHandler,
    *,
    server_status: str | None,
) -> int:
    """Walk the listings, resuming where a scan with the same spec stopped; returns the
    number of pages read by this call. `server_status` filters on Authing's side."""
    spec_text = json.dumps(spec, sort_keys=True)
    async with engine.begin() as conn:
        saved = await store.cursors(conn, name)
        if any(s != spec_text for s, _, _ in saved.values()):
            await store.reset(conn, name)
            saved = {}
    pages = 0
    for listing in names:
        _, last, done = saved.get(listing, (spec_text, 0, False))
        if done:
            continue
        page = max(1, last)  # the last committed page again: see the module docstring
        if last:
            log.info(
                "discovery %s: resuming %s at page %d",
                name,
                listing,
                page,
                extra={"event": "discovery_resumed"},
            )
        app = listing[len(LOGGED_IN) :] if listing.startswith(LOGGED_IN) else None
        while True:
            total, users = await api.users_page(page, status=server_status, logged_in_to=app)
            pages += 1
            finished = not users or page * PAGE_LIMIT >= total
            async with engine.begin() as conn:
                await handle(conn, listing, users)
                await store.save_cursor(conn, name, listing, spec_text, page, finished)
            if finished:
                break
            page += 1
    return pages
