"""Control endpoints for tests and scripts (not Authing's): `GET /__stats`, `POST /__reset`,
`GET|POST /__config`, and the directory's runtime changes:

    GET  /__directory                                   summary (users, apps and their state)
    POST /__directory/users/remove   {"userIds": [..]}  -> {"removed": [..]}
    POST /__directory/users/add      {"count": n}       -> {"added": [ids]}
    POST /__directory/apps/remove    {"appIds": [..]}   -> {"removed": [..]}
    POST /__directory/apps/disable   {"appIds": [..]}   -> {"disabled": [..]}
    POST /__directory/apps/enable    {"appIds": [..]}   -> {"enabled": [..]}
    POST /__directory/apps/add       {"apps": ["id=name", ..]} -> {"added": [ids]}

They pass no gate and need no credentials; a malformed body answers HTTP 400 `{"error"}`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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

    async def get_directory(request: web.Request) -> web.Response:
        return web.json_response(emulator.world.summary())

    def change(key: str, kind: type, result: str, apply: Callable[[Any], Any]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            body = json_object(await request.read())
            value = None if body is None else body.get(key)
            if kind is list:
                valid = isinstance(value, list) and all(isinstance(v, str) for v in value)
            else:
                valid = type(value) is int and value >= 0
            if not valid:
                shape = "a list of strings" if kind is list else "an integer >= 0"
                return web.json_response(
                    {"error": f"body must be a JSON object with {key!r}: {shape}"}, status=400
                )
            return web.json_response({result: apply(value)})

        return handler

    return [
        web.get("/__directory", get_directory),
        web.post(
            "/__directory/users/remove", change("userIds", list, "removed", emulator.remove_users)
        ),
        web.post("/__directory/users/add", change("count", int, "added", emulator.add_users)),
        web.post(
            "/__directory/apps/remove", change("appIds", list, "removed", emulator.remove_apps)
        ),
        web.post(
            "/__directory/apps/disable", change("appIds", list, "disabled", emulator.disable_apps)
        ),
        web.post(
            "/__directory/apps/enable", change("appIds", list, "enabled", emulator.enable_apps)
        ),
        web.post("/__directory/apps/add", change("apps", list, "added", emulator.add_apps)),
        web.get("/__stats", get_stats),
        web.post("/__reset", post_reset),
        web.get("/__config", get_config),
        web.post("/__config", post_config),
    ]
