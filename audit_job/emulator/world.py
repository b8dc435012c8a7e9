"""What the emulated user pool holds right now: the directory, the kicked pairs, the truth.

Every endpoint asks here, so check-session-status, get-user-loggedin-apps,
list-application-active-users and kick-users always agree. For a pair, first match wins:
1. the app was removed at runtime: app not found; the user was removed: user not found;
2. the user is outside the directory: today's rules (`truth.verdict`: truth file, the
   `missing-` prefixes, the hash);
3. a directory user: app not found for a `missing-` app; else active when the user has ever
   logged in to the app (directory apps only; any other app counts as logged in) and the
   hash (`truth.hashed_active`, with the user's id) says active;
4. an active answer becomes inactive when the app is disabled or the pair was kicked.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import NamedTuple

from audit_job.emulator.directory import App, Directory, user_id
from audit_job.emulator.options import EmulatorOptions
from audit_job.emulator.selection import Selection
from audit_job.emulator.truth import Verdict, hashed_active, load_truth_file, verdict

_DIRECTORY_FIELDS = ("seed", "users", "apps", "login_share")
_TRUTH_FIELDS = ("seed", "active_share", "users", "apps", "login_share")
_SELECTIONS_KEPT = 32
_BUILD_INLINE_BELOW = 20_000  # bigger directories are scanned in a thread


class UserRef(NamedTuple):
    """A user as an endpoint named it: directory index (or None), canonical id, existence."""

    index: int | None
    user_id: str
    exists: bool


class World:
    def __init__(self, options: Callable[[], EmulatorOptions]) -> None:
        self._options = options
        self.kicked: set[tuple[str, str]] = set()  # (app id, canonical user id)
        self._kicked_indexes: dict[str, set[int]] = {}
        self._kick_version = 0
        self._truth_path: str | None = None
        self._truth_table: dict[tuple[str, str], Verdict] = {}
        self.directory = self._new_directory()
        self._selections: OrderedDict[Hashable, Selection] = OrderedDict()
        self._building: dict[Hashable, asyncio.Future[Selection]] = {}
        self._generation = 0  # part of every cache key: a rebuilt directory starts afresh
        self._excluded: dict[Hashable, tuple[tuple[int, int], list[int]]] = {}
        self._removed_version = 0
        self.load_truth()

    def _new_directory(self) -> Directory:
        options = self._options()
        return Directory(
            seed=options.seed,
            users=options.users,
            apps=options.apps,
            login_share=options.login_share,
        )

    def reconfigured(self, old: EmulatorOptions, new: EmulatorOptions) -> None:
        """Follow an options change: a new directory when its shape changed (runtime changes
        to it are dropped), cached listings dropped when the truth may have moved."""
        changed = {
            f.name for f in dataclasses.fields(new) if getattr(old, f.name) != getattr(new, f.name)
        }
        if changed & set(_DIRECTORY_FIELDS):
            self.directory = self._new_directory()
            self._removed_version += 1
        if changed & set(_TRUTH_FIELDS):
            self._generation += 1
            self._selections.clear()
            self._excluded.clear()
        self.load_truth()

    def load_truth(self) -> None:
        path = self._options().truth_file
        self._truth_table = load_truth_file(path) if path else {}
        self._truth_path = path

    # -- truth -------------------------------------------------------------------------------

    def verdict(self, app_id: str, user_ref: str) -> Verdict:
        options = self._options()
        if options.truth_file != self._truth_path:
            self.load_truth()
        directory = self.directory
        if not directory.active and not self.kicked:
            return verdict(
                app_id,
                user_ref,
                options.seed,
                active_share=options.active_share,
                missing_prefix=options.missing_prefix,
                table=self._truth_table,
            )
        if app_id in directory.removed_apps:
            return Verdict.APP_NOT_FOUND
        index = directory.resolve(user_ref)
        if index is None:
            if user_ref in directory.removed_other:
                return Verdict.USER_NOT_FOUND
            found = verdict(
                app_id,
                user_ref,
                options.seed,
                active_share=options.active_share,
                missing_prefix=options.missing_prefix,
                table=self._truth_table,
            )
            canonical = user_ref
        else:
            if index in directory.removed:
                return Verdict.USER_NOT_FOUND
            prefix = options.missing_prefix
            if prefix and app_id.startswith(prefix):
                return Verdict.APP_NOT_FOUND
            canonical = user_id(index)
            app = directory.app(app_id)
            active = (app is None or directory.logged_in(index, app)) and hashed_active(
                app_id, canonical, options.seed, options.active_share
            )
            found = Verdict.ACTIVE if active else Verdict.INACTIVE
        if found is Verdict.ACTIVE and (
            app_id in directory.disabled_apps or (app_id, canonical) in self.kicked
        ):
            return Verdict.INACTIVE
        return found

    def find_user(self, ref: str, id_type: str = "user_id") -> UserRef:
        """The user an endpoint names with `userId` and `userIdType`."""
        directory = self.directory
        index = directory.resolve(ref, id_type)
        if index is not None:
            return UserRef(index, user_id(index), index not in directory.removed)
        prefix = self._options().missing_prefix
        gone = ref in directory.removed_other or bool(prefix and ref.startswith(prefix))
        return UserRef(None, ref, not gone)

    def app_exists(self, app_id: str) -> bool:
        prefix = self._options().missing_prefix
        if prefix and app_id.startswith(prefix):
            return False
        return app_id not in self.directory.removed_apps

    # -- kicks -------------------------------------------------------------------------------

    def kick(self, app_ids: list[str], user: UserRef) -> None:
        for app_id in app_ids:
            self.kicked.add((app_id, user.user_id))
            if user.index is not None:
                self._kicked_indexes.setdefault(app_id, set()).add(user.index)
        self._kick_version += 1

    def kicked_pairs(self) -> list[str]:
        return sorted(f"{app_id}\t{user}" for app_id, user in self.kicked)

    # -- runtime changes -----------------------------------------------------------------------

    def remove_users(self, identifiers: list[str]) -> list[str]:
        gone = self.directory.remove_users(identifiers)
        self._removed_version += 1
        return gone

    def add_users(self, count: int) -> list[str]:
        return [user_id(index) for index in self.directory.add_users(count)]

    def remove_apps(self, app_ids: list[str]) -> list[str]:
        """Make the apps gone (app not found from now on); ids outside the directory too."""
        removed = self.directory.removed_apps
        gone = [app_id for app_id in dict.fromkeys(app_ids) if app_id not in removed]
        removed.update(gone)
        return gone

    def disable_apps(self, app_ids: list[str], disabled: bool = True) -> list[str]:
        """Disabled apps stay listed and found, but nobody is active in them."""
        apps = self.directory.disabled_apps
        changed = [app_id for app_id in dict.fromkeys(app_ids) if (app_id in apps) != disabled]
        if disabled:
            apps.update(changed)
        else:
            apps.difference_update(changed)
        return changed

    def add_apps(self, entries: list[str]) -> list[str]:
        return [app.app_id for app in self.directory.add_apps(entries)]

    def summary(self) -> dict[str, object]:
        directory = self.directory
        removed, disabled = directory.removed_apps, directory.disabled_apps
        listed = [
            {
                "appId": app.app_id,
                "appName": app.name,
                "state": "disabled" if app.app_id in disabled else "enabled",
            }
            for app in directory.apps()
        ]
        return {
            "users": directory.count,
            "removedUsers": len(directory.removed),
            "removedOtherUsers": sorted(directory.removed_other),
            "apps": listed,
            "removedApps": sorted(removed),
            "disabledApps": sorted(disabled),
            "kickedPairs": len(self.kicked),
        }

    # -- listings ------------------------------------------------------------------------------

    async def users_page(
        self,
        *,
        statuses: frozenset[str] | None,
        logged_in_to: list[str] | None,
        keywords: str | None,
        offset: int,
        limit: int,
        descending: bool,
    ) -> tuple[int, list[int]]:
        """(totalCount, indexes) of list-users: directory users matching every filter."""
        directory = self.directory
        apps = None
        if logged_in_to is not None:
            wanted = set(logged_in_to)
            apps = [app for app in directory.apps() if app.app_id in wanted]
        key = (
            self._generation,
            "users",
            statuses,
            None if apps is None else tuple(app.slot for app in apps),
            keywords or None,
            directory.count,
        )
        predicate = directory.predicate(statuses=statuses, logged_in_to=apps, keywords=keywords)
        return await self._page(key, predicate, set(), offset, limit, descending)

    async def active_users_page(
        self, app_id: str, offset: int, limit: int
    ) -> tuple[int, list[int]]:
        """(totalCount, indexes) of the directory users active in the app right now."""
        directory = self.directory
        if app_id in directory.disabled_apps:
            return 0, []
        options = self._options()
        app = directory.app(app_id)
        key = (self._generation, "active", app_id, app.slot if app else None, directory.count)
        predicate = self._active_predicate(app_id, app, options.seed, options.active_share)
        kicked = self._kicked_indexes.get(app_id, set())
        return await self._page(key, predicate, kicked, offset, limit, False)

    def _active_predicate(
        self, app_id: str, app: App | None, seed: int, share: float
    ) -> Callable[[int], bool]:
        if app is None:
            return lambda index: hashed_active(app_id, user_id(index), seed, share)
        logged_in = self.directory.logged_in
        return lambda index: (
            logged_in(index, app) and hashed_active(app_id, user_id(index), seed, share)
        )

    async def _page(
        self,
        key: Hashable,
        predicate: Callable[[int], bool] | None,
        kicked: set[int],
        offset: int,
        limit: int,
        descending: bool,
    ) -> tuple[int, list[int]]:
        selection = await self._selection(key, predicate)
        excluded = self._excluded_for(key, predicate, kicked)
        total = selection.total(excluded)
        return total, selection.page(offset, limit, excluded, descending=descending)

    def _excluded_for(
        self, key: Hashable, predicate: Callable[[int], bool] | None, kicked: set[int]
    ) -> list[int]:
        """Removed (and, for active users, kicked) indexes the predicate matches, sorted."""
        directory = self.directory
        version = (self._removed_version, self._kick_version)
        cached = self._excluded.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        candidates = directory.removed | kicked
        excluded = sorted(
            index
            for index in candidates
            if index <= directory.count and (predicate is None or predicate(index))
        )
        self._excluded[key] = (version, excluded)
        if len(self._excluded) > _SELECTIONS_KEPT * 2:
            self._excluded.pop(next(iter(self._excluded)))
        return excluded

    async def _selection(self, key: Hashable, predicate: Callable[[int], bool] | None) -> Selection:
        selection = self._selections.get(key)
        if selection is not None:
            self._selections.move_to_end(key)
            return selection
        count = self.directory.count
        if predicate is None or count < _BUILD_INLINE_BELOW:
            selection = Selection(count, predicate)
            self._keep(key, selection)
            return selection
        # One scan per key, in a thread (the loop keeps serving), owned by no request: a
        # client that gives up does not waste it.
        task = self._building.get(key)
        if task is None:
            task = asyncio.ensure_future(asyncio.to_thread(Selection, count, predicate))
            self._building[key] = task
            task.add_done_callback(lambda done: self._built(key, done))
        return await asyncio.shield(task)

    def _built(self, key: Hashable, task: asyncio.Future[Selection]) -> None:
        self._building.pop(key, None)
        if not task.cancelled() and task.exception() is None:
            self._keep(key, task.result())

    def _keep(self, key: Hashable, selection: Selection) -> None:
        self._selections[key] = selection
        if len(self._selections) > _SELECTIONS_KEPT:
            self._selections.popitem(last=False)
