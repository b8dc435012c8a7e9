"""A real webhook receiver on loopback for the delivery tests: it verifies every request's
signature with the Standard Webhooks reference library, records every request (with what
it answered), and can refuse connections, answer 503, hang, or refuse batches for good.

`Receiver` runs on the test's event loop; `ReceiverThread` on its own thread, for tests
that drive `audit-job` subprocesses."""

from __future__ import annotations

import asyncio
import base64
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass
class Request:
    message_id: str | None
    ids: list[int]
    answered: int | None  # None: no answer given (hung)
    verified: bool
    query: str = ""

    @property
    def acknowledged(self) -> bool:
        return self.answered is not None and 200 <= self.answered < 300


@dataclass
class Receiver:
    secret: str
    mode: str = "ok"  # ok | 503 | hang | 400
    delay_seconds: float = 0.0  # before answering, in every mode
    hang_seconds: float = 30.0
    requests: list[Request] = field(default_factory=list)
    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    port: int = 0

    def __post_init__(self) -> None:
        self._verifier = Webhook(self.secret)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            parsed = self._verifier.verify(body, dict(request.headers))
            verified = True
        except WebhookVerificationError:
            parsed, verified = {"events": []}, False
        ids = [event["id"] for event in parsed["events"]]
        for event in parsed["events"]:
            self.events[event["id"]] = event
        record = Request(
            request.headers.get("webhook-id"), ids, None, verified, request.query_string
        )
        self.requests.append(record)
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        mode = self.mode
        if not verified:
            record.answered = 401
            return web.Response(status=401, text="bad signature")
        if mode == "hang":
            await asyncio.sleep(self.hang_seconds)
            return web.Response(status=200)  # nobody waits for it any more
        if mode == "503":
            record.answered = 503
            return web.Response(status=503, headers={"Retry-After": "1"}, text="busy")
        if mode == "400":
            record.answered = 400
            # echoes the request's query, as a careless receiver might: it must not leak
            return web.Response(status=400, text=f"rejected batch for ?{request.query_string}")
        record.answered = 200
        return web.Response(status=200, text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._runner = runner

    async def stop(self) -> None:
        """Close the port and every open connection: connections are refused until
        start() again (on the same port)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- what the tests check ----------------------------------------------------------------

    def acknowledged(self) -> list[Request]:
        return [r for r in self.requests if r.acknowledged]

    def acknowledged_ids(self) -> list[int]:
        return [i for r in self.acknowledged() for i in r.ids]

    def all_verified(self) -> bool:
        return all(r.verified for r in self.requests)


class ReceiverThread:
    """A Receiver on its own event loop and thread."""

    def __init__(self, secret: str, **options: Any) -> None:
        self.receiver = Receiver(secret, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        self.call(self.receiver.start())
        return self.receiver

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def __exit__(self, *exc: object) -> None:
        self.call(self.receiver.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
