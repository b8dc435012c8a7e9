"""The request gate: what a gateway in front of Authing might do before an endpoint answers.

In order: throttle (the shared token bucket; HTTP 429 + Retry-After), the configured delay,
then one fault drawn from the seeded RNG (kinds exclude each other, FAULT_KINDS order).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from aiohttp import web

from audit_job.emulator.envelopes import HTML_502, JSON_TYPE, SUCCESS_API_CODE, Envelopes, english
from audit_job.emulator.options import FAULT_KINDS, EmulatorOptions
from audit_job.emulator.stats import Stats
from audit_job.emulator.throttle import TokenBucket


class Gate:
    def __init__(
        self,
        options: Callable[[], EmulatorOptions],
        stats: Stats,
        envelopes: Envelopes,
        rng: random.Random,
        closing: asyncio.Event,
    ) -> None:
        self._options = options
        self._stats = stats
        self._envelopes = envelopes
        self.rng = rng
        self.bucket = TokenBucket()
        self._closing = closing

    async def admit(self, request: web.Request, *, faults: bool) -> web.StreamResponse | None:
        """None when the request may go on to its endpoint, else the answer to send instead."""
        options = self._options()
        wait = self.bucket.take(options.rate, options.burst)
        if wait > 0:
            return self._throttled(request, options, wait)
        if options.delay_ms > 0 or options.jitter_ms > 0:
            extra = self.rng.uniform(0, options.jitter_ms) if options.jitter_ms > 0 else 0.0
            await asyncio.sleep((options.delay_ms + extra) / 1000.0)
        if not faults:
            return None
        kind = self._draw_fault(options)
        if kind is None:
            return None
        self._stats.faults[kind] += 1
        self._stats.answers["fault"] += 1
        return await self._fault(kind, request, options)

    def _throttled(
        self, request: web.Request, options: EmulatorOptions, wait: float
    ) -> web.Response:
        self._stats.throttled += 1
        self._stats.answers["throttled"] += 1
        headers = {"Content-Type": JSON_TYPE}
        if options.retry_after:
            seconds = options.retry_after_seconds
            value = seconds if seconds is not None else max(1, int(wait + 0.999))
            headers["Retry-After"] = str(int(value)) if value == int(value) else str(value)
        en = english(request)
        body = self._envelopes.body(429, None, "请求过于频繁", "Too Many Requests", en)
        return web.Response(status=429, body=body, headers=headers)

    def _draw_fault(self, options: EmulatorOptions) -> str | None:
        draw = self.rng.random()
        edge = 0.0
        for kind in FAULT_KINDS:
            probability = getattr(options, f"fault_{kind}")
            if probability <= 0:
                continue
            edge += probability
            if draw < edge:
                return kind
        return None

    async def _fault(
        self, kind: str, request: web.Request, options: EmulatorOptions
    ) -> web.StreamResponse:
        envelopes = self._envelopes
        if kind == "hang":
            try:
                await asyncio.wait_for(self._closing.wait(), options.hang_seconds)
            except TimeoutError:
                pass
            kind = "reset"
        if kind == "reset":
            transport = request.transport
            if transport is not None:
                transport.abort()
            # aiohttp drops whatever is written to an aborted transport.
            return web.Response(status=500)
        if kind == "html_502":
            return web.Response(status=502, body=HTML_502, content_type="text/html")
        if kind == "5xx":
            status = self.rng.choice((500, 503))
            if self.rng.random() < 0.5:
                return web.Response(status=status)
            body = envelopes.body(status, None, "服务器内部错误", "Internal Server Error", False)
            return web.Response(status=status, body=body, headers={"Content-Type": JSON_TYPE})
        if kind == "bad_json":
            # Complete HTTP message whose body is cut mid-JSON (not a transport truncation).
            body = envelopes.body(200, SUCCESS_API_CODE, "", "", False, {"active": True})
            return web.Response(
                status=200, body=body[: len(body) // 2], headers={"Content-Type": JSON_TYPE}
            )
        # busy: "系统繁忙,请稍后再试" (apiCode 1000, spec 6 row 4)
        return envelopes.error(
            500, 1000, "系统繁忙，请稍后再试", "The system is busy", english(request)
        )
