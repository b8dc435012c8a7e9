"""The request gate: what a gateway and a busy server do before an endpoint answers.

In order: throttle (one token bucket for every API endpoint; HTTP 429 + Retry-After), wait
for one of `capacity` service slots (arrival order; 0 = no cap), the service time (delay_ms
plus up to jitter_ms) holding the slot, then one fault drawn from the seeded RNG (kinds
exclude each other, FAULT_KINDS order). With a capacity, latency grows with load as a real
server's does: a request waits for the ones ahead of it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
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
        self.slots = Slots(stats)

    def throttle(self, request: web.Request) -> web.Response | None:
        """The 429 answer when the bucket is empty, else None (a token was taken)."""
        options = self._options()
        wait = self.bucket.take(options.rate, options.burst)
        if wait > 0:
            return self._throttled(request, options, wait)
        return None

    def limit_headers(self) -> dict[str, str] | None:
        """Rate-limit headers for the answer of the request throttle() just saw, if enabled."""
        options = self._options()
        style = options.rate_limit_headers
        if style == "off":
            return None
        return self.bucket.limit_headers(options.rate, options.burst, style, time.time())

    async def serve(self, request: web.Request, *, faults: bool) -> web.StreamResponse | None:
        """Queue, service time, fault: None when the endpoint may answer, else the answer."""
        options = self._options()
        if options.delay_ms > 0 or options.jitter_ms > 0 or options.capacity > 0:
            await self._service(options)
        if not faults:
            return None
        kind = self._draw_fault(options)
        if kind is None:
            return None
        self._stats.faults[kind] += 1
        self._stats.answers["fault"] += 1
        return await self._fault(kind, request, options)

    async def _service(self, options: EmulatorOptions) -> None:
        await self.slots.acquire(options.capacity)
        try:
            extra = self.rng.uniform(0, options.jitter_ms) if options.jitter_ms > 0 else 0.0
            seconds = (options.delay_ms + extra) / 1000.0
            if seconds > 0:
                await asyncio.sleep(seconds)
        finally:
            self.slots.release(self._options().capacity)

    def _throttled(
        self, request: web.Request, options: EmulatorOptions, wait: float
    ) -> web.Response:
        self._stats.throttle()
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


class Slots:
    """`capacity` service slots handed out in arrival order (0 = as many as asked for)."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._serving = 0

    async def acquire(self, capacity: int) -> None:
        if not self._waiters and (capacity <= 0 or self._serving < capacity):
            self._take()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._stats.enqueue()
        try:
            await waiter  # the releaser took the slot on our behalf
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(capacity)  # handed a slot just as the client gave up
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass  # a release already dropped it (and counted it)
                else:
                    self._stats.dequeue()
            raise

    def release(self, capacity: int) -> None:
        self._serving -= 1
        self._stats.served()
        self.wake(capacity)

    def wake(self, capacity: int) -> None:
        """Hand free slots to the oldest waiters (several when the capacity was raised)."""
        while self._waiters and (capacity <= 0 or self._serving < capacity):
            waiter = self._waiters.popleft()
            self._stats.dequeue()
            if not waiter.done():
                self._take()
                waiter.set_result(None)

    def _take(self) -> None:
        self._serving += 1
        self._stats.serve()
