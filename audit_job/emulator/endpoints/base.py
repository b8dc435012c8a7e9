"""The flow every API endpoint shares, in this order: count the request, read its parameters,
pass the gate (throttle, queue, service time, faults), authenticate, then let the endpoint
answer; the rate-limit headers (when enabled) go on whatever answer results.

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
    without `authenticate` (the token call) a body that is not JSON reaches the endpoint as
    `{}`; otherwise it answers 400 before authentication."""
    counters = emulator.counters
    gate = emulator.gate
    arrived_at: float | None = counters.arrive()
    try:
        params = await read_params(request)
        if before is not None:
            before(params)
        response = gate.throttle(request)
        limits = gate.limit_headers()
        if response is not None:
            arrived_at = None  # a 429 from the throttle is not a served request
        else:
            response = await gate.serve(request, faults=faults)
            if response is None:
                response = await _answer(emulator, request, params, answer, authenticate)
        if limits:
            response.headers.update(limits)
        return response
    finally:
        transport = request.transport
        if transport is None or transport.is_closing():
            arrived_at = None  # reset, hung up, or the client gave up: no answer
        counters.leave(arrived_at)


async def _answer(
    emulator: Emulator,
    request: web.Request,
    params: Params | None,
    answer: Answer,
    authenticate: bool,
) -> web.StreamResponse:
    en = english(request)
    if not authenticate:
        return await answer(params or {}, en)
    counters = emulator.counters
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


def api_handler(
    emulator: Emulator, name: str, answer: Answer
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler taking the shared flow, counted as `name` in requests_by_endpoint."""
    counters = emulator.counters

    def count(params: Params | None) -> None:
        counters.endpoint(name)

    async def handle(request: web.Request) -> web.StreamResponse:
        return await serve_api(emulator, request, answer, before=count)

    return handle
