"""POST /api/v3/get-management-token (spec 4): access key id and secret -> a JWT-shaped token
carrying `scoped_userpool_id`. Faults hit it only with `faults_on_token`."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from aiohttp import web

from audit_job.emulator.auth import REJECTIONS
from audit_job.emulator.endpoints.base import Params, serve_api

if TYPE_CHECKING:
    from audit_job.emulator.server import Emulator

TOKEN_PATH = "/api/v3/get-management-token"


def routes(emulator: Emulator) -> list[web.RouteDef]:
    counters = emulator.counters
    envelopes = emulator.envelopes

    def count(params: Params | None) -> None:
        counters.token_requests += 1
        counters.endpoint("get-management-token")

    async def answer(params: Params, en: bool) -> web.StreamResponse:
        options = emulator.options
        key_id, secret = params.get("accessKeyId"), params.get("accessKeySecret")
        if not (
            type(key_id) is str
            and type(secret) is str
            and hmac.compare_digest(key_id.encode(), options.access_key_id.encode())
            and hmac.compare_digest(secret.encode(), options.access_key_secret.encode())
        ):
            counters.auth_failed("bad_credentials")
            api_code, zh, english = REJECTIONS["bad_credentials"]
            return envelopes.error(401, api_code, zh, english, en)
        token = emulator.auth.tokens.issue(options.userpool_id, options.token_ttl)
        counters.tokens_issued += 1
        counters.answers["token_issued"] += 1
        return envelopes.success({"access_token": token, "expires_in": options.token_ttl}, en)

    async def get_management_token(request: web.Request) -> web.StreamResponse:
        faults = emulator.options.faults_on_token
        return await serve_api(
            emulator, request, answer, faults=faults, authenticate=False, before=count
        )

    return [web.post(TOKEN_PATH, get_management_token)]
