"""User endpoints (authing-api-more.md 1a, 1d, 2a), over the generated directory:

    POST /api/v3/list-users               keywords, advancedFilter, options{pagination, sort}
    GET  /api/v3/list-users               legacy: page, limit, status
    GET  /api/v3/get-user-loggedin-apps   userId, userIdType -> [{appId, appName, ...}]
    POST /api/v3/kick-users               appIds (1..50), userId, options.userIdType

A user outside the directory exists unless its id has the `missing-` prefix or was removed;
it has no login record (an empty app list) and is listed nowhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from audit_job.emulator import filters, paging
from audit_job.emulator.endpoints.base import Params, api_handler
from audit_job.emulator.envelopes import APP_NOT_FOUND, USER_NOT_FOUND
from audit_job.emulator.paging import BadParameter
from audit_job.emulator.truth import hashed_active

if TYPE_CHECKING:
    from audit_job.emulator.server import Emulator

LIST_USERS_PATH = "/api/v3/list-users"
LOGGEDIN_APPS_PATH = "/api/v3/get-user-loggedin-apps"
KICK_USERS_PATH = "/api/v3/kick-users"
MAX_KICK_APPS = 50
_LEGACY_UNMODELLED = ("updatedAtStart", "updatedAtEnd")
_KICK_FAILURE_KEY = "\x00kick-users"  # the hash key's app part: no real app id collides


def kick_fails(user_id: str, seed: int, share: float) -> bool:
    """Whether kicks of this user fail under `kick_failure_share` (stable per user)."""
    return share > 0 and hashed_active(_KICK_FAILURE_KEY, user_id, seed, share)


def routes(emulator: Emulator) -> list[web.RouteDef]:
    counters = emulator.counters
    envelopes = emulator.envelopes
    world = emulator.world

    def refused(problem: BadParameter, en: bool) -> web.Response:
        counters.answers["bad_request"] += 1
        return envelopes.bad_request(problem.zh, problem.en, en)

    async def user_page(
        en: bool,
        page: int,
        limit: int,
        wanted: filters.UserFilter,
        keywords: str | None,
        descending: bool,
        options: dict[str, Any],
    ) -> web.Response:
        total, indexes = await world.users_page(
            statuses=wanted.statuses,
            logged_in_to=None if wanted.logged_in_to is None else list(wanted.logged_in_to),
            keywords=keywords,
            offset=(page - 1) * limit,
            limit=limit,
            descending=descending,
        )
        directory = world.directory
        listed = [directory.user_dto(index, options) for index in indexes]
        counters.answers["listed"] += 1
        return envelopes.success({"totalCount": total, "list": listed}, en)

    async def list_users_answer(params: Params, en: bool) -> web.StreamResponse:
        try:
            keywords = paging.optional_string(params, "keywords")
            if params.get("searchQuery") is not None:
                raise paging.not_modelled("searchQuery")
            wanted = filters.user_filter(params.get("advancedFilter"))
            options = paging.optional_object(params, "options")
            pagination = paging.optional_object(options, "pagination")
            page, limit = paging.pagination(pagination.get("page"), pagination.get("limit"))
            descending = filters.descending(options.get("sort"))
        except BadParameter as problem:
            return refused(problem, en)
        return await user_page(en, page, limit, wanted, keywords, descending, options)

    async def list_users_legacy_answer(params: Params, en: bool) -> web.StreamResponse:
        try:
            page, limit = paging.pagination(
                params.get("page"), params.get("limit"), from_query=True
            )
            status = params.get("status")
            wanted = filters.user_filter(
                None
                if status is None
                else [{"field": "status", "operator": "EQUAL", "value": status}]
            )
            for name in _LEGACY_UNMODELLED:
                if name in params:
                    raise paging.not_modelled(name)
            options = {
                name: paging.query_flag(params, name)
                for name in ("withCustomData", "withIdentities", "withDepartmentIds")
            }
        except BadParameter as problem:
            return refused(problem, en)
        return await user_page(en, page, limit, wanted, None, False, options)

    async def loggedin_apps_answer(params: Params, en: bool) -> web.StreamResponse:
        try:
            ref = paging.required_string(params, "userId")
            id_type = paging.user_id_type(params.get("userIdType"))
        except BadParameter as problem:
            return refused(problem, en)
        user = world.find_user(ref, id_type)
        if not user.exists:
            counters.answers["user_not_found"] += 1
            return envelopes.not_found(USER_NOT_FOUND, en)
        directory = world.directory
        apps = [] if user.index is None else directory.logged_in_apps(user.index)
        counters.answers["loggedin_apps"] += 1
        return envelopes.success([directory.logged_in_app_dto(app) for app in apps], en)

    async def kick_answer(params: Params, en: bool) -> web.StreamResponse:
        app_ids = params.get("appIds")
        try:
            if (
                not isinstance(app_ids, list)
                or not app_ids
                or not all(isinstance(a, str) and a for a in app_ids)
            ):
                raise BadParameter.named("appIds")
            if len(app_ids) > MAX_KICK_APPS:
                message = f"appIds must contain no more than {MAX_KICK_APPS} elements"
                raise BadParameter(message, message)
            ref = paging.required_string(params, "userId")
            options = paging.optional_object(params, "options")
            id_type = paging.user_id_type(options.get("userIdType"))
        except BadParameter as problem:
            return refused(problem, en)
        user = world.find_user(ref, id_type)
        if not user.exists:
            counters.answers["user_not_found"] += 1
            return envelopes.not_found(USER_NOT_FOUND, en)
        if not all(world.app_exists(app_id) for app_id in app_ids):
            counters.answers["app_not_found"] += 1
            return envelopes.not_found(APP_NOT_FOUND, en)  # and nothing is kicked
        config = emulator.options
        if kick_fails(user.user_id, config.seed, config.kick_failure_share):
            counters.kick_failed(user.user_id)
            if config.kick_failure == "false":
                return envelopes.success({"success": False}, en)
            return envelopes.bad_request("强制下线失败", "failed to kick the user offline", en)
        world.kick(app_ids, user)
        counters.kicked(user.user_id)
        return envelopes.success({"success": True}, en)

    return [
        web.post(LIST_USERS_PATH, api_handler(emulator, "list-users", list_users_answer)),
        web.get(
            LIST_USERS_PATH, api_handler(emulator, "list-users-legacy", list_users_legacy_answer)
        ),
        web.get(
            LOGGEDIN_APPS_PATH,
            api_handler(emulator, "get-user-loggedin-apps", loggedin_apps_answer),
        ),
        web.post(KICK_USERS_PATH, api_handler(emulator, "kick-users", kick_answer)),
    ]
