"""Control endpoints for tests and scripts (not Authing's): `GET /__stats`, `POST /__reset`,
`GET|POST /__config`. They pass no gate and need no credentials."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from audit_job.emulator.envelopes import json_object

if TYPE_CHECKING:
    from audit_job.emulator.server import Emulator


def routes(emulator: Emulator) -> list[web.RouteDef]:
    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(emulator.stats())

    async def post_reset(request: web.Request) -> web.Response:
        emulator.reset_stats()
        return web.json_response({"ok": True})

    async def get_config(request: web.Request) -> web.Response:
        return web.json_response(emulator.options.public())

    async def post_config(request: web.Request) -> web.Response:
        changes = json_object(await request.read())
        if changes is None:
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        try:
            new = emulator.configure(**changes)
        except (TypeError, ValueError, OSError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(new.public())

    return [
        web.get("/__stats", get_stats),
        web.post("/__reset", post_reset),
        web.get("/__config", get_config),
        web.post("/__config", post_config),
    ]
