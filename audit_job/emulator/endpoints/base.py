"""The flow every API endpoint shares, in this order: count the request, read its parameters,
pass the gate (throttle, delay, faults), authenticate, then let the endpoint answer.

Parameters are what the signature covers (spec 2): the JSON body's top-level keys for POST,
the decoded query string for GET (first value of a repeated key).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from audit_job.emulator.auth import REJECTIONS
from audit_job.emulator.envelopes import english, json_object

if TYPE_CHECKING:
    from audit_job.emulator.server import Emulator

Params = dict[str, Any]
Answer = Callable[[Params, bool], Awaitable[web.StreamResponse]]


async def read_params(request: web.Request) -> Params | None:
    """The request's signed parameters; None when a POST body is not a JSON object."""
    if request.method == "GET":
        query = request.query
        return {key: query.getone(key) for key in query}
    return json_object(await request.read())


async def serve_api(
    emulator: Emulator,
    request: web.Request,
    answer: Answer,
    *,
    faults: bool = True,
    authenticate: bool = True,
    before: Callable[[Params | None], None] | None = None,
) -> web.StreamResponse:
    """Run one API request through the shared flow; `answer(params, en)` has the last word.

    `before` sees the parameters ahead of the gate (to count requests that get throttled);
    without `authenticate` the endpoint also receives None for a body that is not JSON."""
    counters = emulator.counters
    counters.arrive()
    try:
        params = await read_params(request)
        if before is not None:
            before(params)
        early = await emulator.gate.admit(request, faults=faults)
        if early is not None:
            return early
        en = english(request)
        if not authenticate:
            return await answer(params or {}, en)
        if params is None:
            counters.answers["bad_request"] += 1
            return emulator.envelopes.bad_request(
                "请求体必须是 JSON 对象", "body must be a JSON object", en
            )
        reason = emulator.auth.check(request.method, request.path, request.headers, params)
        if reason is not None:
            counters.auth_failed(reason)
            api_code, zh, english_message = REJECTIONS[reason]
            return emulator.envelopes.error(401, api_code, zh, english_message, en)
        return await answer(params, en)
    finally:
        counters.leave()
