"""The daemon's optional HTTP listener: `/healthz` and `/metrics` (aiohttp, same process).

- GET /healthz: 200 "ok: ..." when the scheduler runs and the database answered the last
  leadership check; 503 with the reason otherwise.
- GET /metrics: the Prometheus text format.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from audit_job.errors import ConfigError
from audit_job.metrics import CONTENT_TYPE

Health = Callable[[], Awaitable[tuple[bool, str]]]
Scrape = Callable[[], Awaitable[bytes]]


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


async def start_listener(listen: str, health: Health, scrape: Scrape) -> web.AppRunner:
    async def healthz(_request: web.Request) -> web.Response:
        ok, reason = await health()
        return web.Response(status=200 if ok else 503, text=reason + "\n")

    async def metrics(_request: web.Request) -> web.Response:
        body = await scrape()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = split_listen(listen)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"[daemon] listen: cannot listen on {listen}: {exc.strerror}") from exc
    return runner
