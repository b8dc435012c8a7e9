"""Application endpoints (authing-api-more.md 1c, 1e), over the generated directory:

    GET  /api/v3/list-applications             page, limit, keywords -> {list, totalCount}
    POST /api/v3/list-application-active-users appId, options.pagination -> {totalCount, list}

list-applications shows the directory's apps that were not removed (disabled ones too);
`keywords` matches the id or name, case-insensitively. `isIntegrateApp`, `isSelfBuiltApp`,
`ssoEnabled` and `all` must be booleans but filter nothing: every emulated app is a
self-built web app without SSO, and the Node SDK sends `false` for the first three by default.
list-application-active-users lists the directory users whose check-session-status for the
app answers active right now, in creation order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from audit_job.emulator import paging
from audit_job.emulator.endpoints.base import Params, api_handler
from audit_job.emulator.envelopes import APP_NOT_FOUND
from audit_job.emulator.paging import BadParameter

if TYPE_CHECKING:
    from audit_job.emulator.server import Emulator

LIST_APPLICATIONS_PATH = "/api/v3/list-applications"
ACTIVE_USERS_PATH = "/api/v3/list-application-active-users"
_FLAGS = ("isIntegrateApp", "isSelfBuiltApp", "ssoEnabled", "all")


def routes(emulator: Emulator) -> list[web.RouteDef]:
    counters = emulator.counters
    envelopes = emulator.envelopes
    world = emulator.world

    def refused(problem: BadParameter, en: bool) -> web.Response:
        counters.answers["bad_request"] += 1
        return envelopes.bad_request(problem.zh, problem.en, en)

    async def list_applications_answer(params: Params, en: bool) -> web.StreamResponse:
        try:
            page, limit = paging.pagination(
                params.get("page"), params.get("limit"), from_query=True
            )
            keywords = paging.optional_string(params, "keywords")
            for flag in _FLAGS:
                paging.query_flag(params, flag)
        except BadParameter as problem:
            return refused(problem, en)
        directory = world.directory
        apps = directory.apps()
        if keywords:
            needle = keywords.casefold()
            apps = [a for a in apps if needle in a.app_id.casefold() or needle in a.name.casefold()]
        shown = apps[(page - 1) * limit : page * limit]
        userpool_id = emulator.options.userpool_id
        listed = [directory.app_dto(app, userpool_id) for app in shown]
        counters.answers["listed"] += 1
        return envelopes.success({"list": listed, "totalCount": len(apps)}, en)

    async def active_users_answer(params: Params, en: bool) -> web.StreamResponse:
        try:
            app_id = paging.required_string(params, "appId")
            options = paging.optional_object(params, "options")
            pagination = paging.optional_object(options, "pagination")
            page, limit = paging.pagination(pagination.get("page"), pagination.get("limit"))
        except BadParameter as problem:
            return refused(problem, en)
        if not world.app_exists(app_id):
            counters.answers["app_not_found"] += 1
            return envelopes.not_found(APP_NOT_FOUND, en)
        total, indexes = await world.active_users_page(app_id, (page - 1) * limit, limit)
        directory = world.directory
        listed = [directory.user_dto(index, options) for index in indexes]
        counters.answers["listed"] += 1
        return envelopes.success({"totalCount": total, "list": listed}, en)

    return [
        web.get(
            LIST_APPLICATIONS_PATH,
            api_handler(emulator, "list-applications", list_applications_answer),
        ),
        web.post(
            ACTIVE_USERS_PATH,
            api_handler(emulator, "list-application-active-users", active_users_answer),
        ),
    ]
