"""POST /api/v3/check-session-status (spec 1): `{appId, userId}` -> `data.active`, or the
not-found envelopes (404/2004 for users, 499/"2011" for apps, spec 9)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from audit_job.emulator.endpoints.base import Params, serve_api
from audit_job.emulator.envelopes import APP_NOT_FOUND, USER_NOT_FOUND
from audit_job.emulator.truth import Verdict
from audit_job.signing import CHECK_SESSION_PATH

if TYPE_CHECKING:
    from audit_job.emulator.server import Emulator

_NOT_FOUND = {Verdict.USER_NOT_FOUND: USER_NOT_FOUND, Verdict.APP_NOT_FOUND: APP_NOT_FOUND}


def routes(emulator: Emulator) -> list[web.RouteDef]:
    counters = emulator.counters
    envelopes = emulator.envelopes

    def count(params: Params | None) -> None:
        counters.check_requests += 1
        counters.endpoint("check-session-status")
        if params is not None:
            app_id, user_id = params.get("appId"), params.get("userId")
            if type(app_id) is str and type(user_id) is str:
                counters.pair(app_id, user_id)

    async def answer(params: Params, en: bool) -> web.StreamResponse:
        app_id, user_id = params.get("appId"), params.get("userId")
        if not (type(app_id) is str and app_id and type(user_id) is str and user_id):
            counters.answers["bad_request"] += 1
            zh, english = "appId 和 userId 必须是非空字符串", "appId and userId must be strings"
            return envelopes.bad_request(zh, english, en)
        found = emulator.verdict(app_id, user_id)
        counters.answers[found.value] += 1
        if found is Verdict.ACTIVE or found is Verdict.INACTIVE:
            return envelopes.success({"active": found is Verdict.ACTIVE}, en)
        return envelopes.not_found(_NOT_FOUND[found], en)

    async def check_session_status(request: web.Request) -> web.StreamResponse:
        return await serve_api(emulator, request, answer, before=count)

    return [web.post(CHECK_SESSION_PATH, check_session_status)]
