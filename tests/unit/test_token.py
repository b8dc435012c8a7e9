"""Management token provider (spec 4, 5) against a scripted loopback token endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from audit_job.errors import ApiError, AuthRejected
from audit_job.token import (
    DEFAULT_LIFETIME_SECONDS,
    TOKEN_PATH,
    TokenProvider,
    jwt_claims,
    token_expiry,
)

SECRET = "sk-very-secret-value"
T0 = 1_800_000_000.0


def make_jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class TokenServer:
    """Answers from `script` first (one entry per request), then with fresh good tokens."""

    url: str = ""
    requests: int = 0
    # An entry returning None drops the connection without answering.
    script: list[Callable[[], web.StreamResponse | None]] = field(default_factory=list)
    expires_in: Any = 7200
    exp: float | None = None
    delay_seconds: float = 0.0
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def good(self) -> web.Response:
        claims: dict[str, Any] = {"scoped_userpool_id": "pool-1", "n": self.requests}
        if self.exp is not None:
            claims["exp"] = self.exp
        data = {"access_token": make_jwt(claims), "expires_in": self.expires_in}
        return web.json_response({"statusCode": 200, "message": "ok", "data": data})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.bodies.append(await request.json())
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if self.script:
            answer = self.script.pop(0)()
            if answer is not None:
                return answer
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(0.1)  # never reached by the client: it sees the reset
        return self.good()


@pytest.fixture
async def server() -> AsyncIterator[TokenServer]:
    state = TokenServer()
    app = web.Application()
    app.router.add_post(TOKEN_PATH, state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        yield s


class CountingLimiter:
    def __init__(self) -> None:
        self.acquired = 0

    async def acquire(self) -> None:
        self.acquired += 1


async def no_sleep(_: float) -> None:
    return None


def provider(
    server: TokenServer, session: aiohttp.ClientSession, clock: FakeClock, **kwargs: Any
) -> TokenProvider:
    kwargs.setdefault("sleep", no_sleep)
    return TokenProvider(session, server.url, "ak-1", SECRET, clock=clock, **kwargs)


async def test_start_fetches_and_decodes_pool(server, session):
    tokens = provider(server, session, FakeClock())
    token = await tokens.start()
    assert server.requests == 1
    assert server.bodies == [{"accessKeyId": "ak-1", "accessKeySecret": SECRET}]
    assert token.userpool_id == "pool-1"
    assert token.expires_at == T0 + 7200
    assert token.access_token not in repr(token)
    assert SECRET not in repr(tokens)


async def test_hundred_concurrent_callers_share_one_request(server, session):
    server.delay_seconds = 0.05
    limiter = CountingLimiter()
    tokens = provider(server, session, FakeClock(), limiter=limiter)
    got = await asyncio.gather(*(tokens.get() for _ in range(100)))
    assert server.requests == 1
    assert limiter.acquired == 1  # token requests pass through the global limiter
    assert len({t.access_token for t in got}) == 1


async def test_refresh_margin_is_ten_percent_of_long_lifetime(server, session):
    clock = FakeClock()
    tokens = provider(server, session, clock)
    first = await tokens.start()
    clock.now = T0 + 7200 - 720 - 1  # 10 % of 7200 s = 720 s > 60 s
    assert (await tokens.get()) is first
    clock.now = T0 + 7200 - 720 + 1
    second = await tokens.get()
    assert second.access_token != first.access_token
    assert server.requests == 2
    assert second.expires_at == clock.now + 7200


async def test_refresh_margin_is_sixty_seconds_for_short_lifetime(server, session):
    server.expires_in = 300
    clock = FakeClock()
    tokens = provider(server, session, clock)
    first = await tokens.start()
    clock.now = T0 + 239
    assert (await tokens.get()) is first
    clock.now = T0 + 241
    assert (await tokens.get()).access_token != first.access_token
    assert server.requests == 2


async def test_concurrent_refresh_is_single_flight(server, session):
    clock = FakeClock()
    tokens = provider(server, session, clock)
    await tokens.start()
    server.delay_seconds = 0.05
    clock.now = T0 + 7199
    got = await asyncio.gather(*(tokens.get() for _ in range(100)))
    assert server.requests == 2
    assert len({t.access_token for t in got}) == 1


async def test_jwt_exp_earlier_than_expires_in_wins(server, session):
    server.exp = T0 + 1000
    clock = FakeClock()
    tokens = provider(server, session, clock)
    first = await tokens.start()
    assert first.expires_at == T0 + 1000
    clock.now = T0 + 1000 - 101  # margin max(60, 10 % of 1000) = 100 s
    assert (await tokens.get()) is first
    clock.now = T0 + 1000 - 99
    assert (await tokens.get()) is not first
    assert server.requests == 2


def test_expiry_rules():
    assert token_expiry(T0, 7200, None) == T0 + 7200
    assert token_expiry(T0, "7200", T0 + 9000) == T0 + 7200  # numeric string accepted
    assert token_expiry(T0, 7200, T0 + 100) == T0 + 100
    assert token_expiry(T0, None, None) == T0 + DEFAULT_LIFETIME_SECONDS
    assert token_expiry(T0, "soon", "later") == T0 + DEFAULT_LIFETIME_SECONDS
    assert token_expiry(T0, -5, T0 - 10) == T0 + DEFAULT_LIFETIME_SECONDS
    assert token_expiry(T0, True, None) == T0 + DEFAULT_LIFETIME_SECONDS
    assert token_expiry(T0, None, T0 + 50) == T0 + 50


def test_jwt_claims_tolerates_non_jwt():
    assert jwt_claims("opaque") == {}
    assert jwt_claims("a.!!!.c") == {}
    assert jwt_claims(make_jwt({"scoped_userpool_id": "p"})) == {"scoped_userpool_id": "p"}


async def test_neither_usable_means_five_minutes(server, session):
    server.expires_in = None
    tokens = provider(server, session, FakeClock())
    token = await tokens.start()
    assert token.expires_at == T0 + 300


async def test_invalidate_refreshes_once(server, session):
    tokens = provider(server, session, FakeClock())
    first = await tokens.start()
    server.delay_seconds = 0.05

    async def failed_with(token: str) -> str:
        tokens.invalidate(token)
        return (await tokens.get()).access_token

    got = await asyncio.gather(*(failed_with(first.access_token) for _ in range(50)))
    assert server.requests == 2
    assert len(set(got)) == 1 and got[0] != first.access_token
    assert tokens.invalidate(first.access_token) is False  # stale token: no effect
    assert (await tokens.get()).access_token == got[0]
    assert server.requests == 2


def _status(http: int, envelope: dict[str, Any] | None = None, **headers: str):
    def respond() -> web.Response:
        if envelope is None:
            return web.Response(status=http, text="<html>oops</html>", content_type="text/html")
        return web.json_response(envelope, status=http, headers=headers)

    return respond


@pytest.mark.parametrize(
    "failure",
    [
        _status(500),
        _status(502),
        _status(429, {"statusCode": 429, "message": "slow down"}, **{"Retry-After": "1"}),
        _status(200, {"statusCode": 429, "message": "slow down"}),
        _status(200, {"statusCode": 500, "message": "boom"}),
        _status(200, {"statusCode": 400, "apiCode": 1000, "message": "busy"}),
        _status(200, {"statusCode": 200, "data": {}}),  # malformed: no token
        _status(200),  # not JSON
    ],
)
async def test_transient_failures_are_retried(server, session, failure):
    server.script = [failure, failure]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    limiter = CountingLimiter()
    tokens = provider(server, session, FakeClock(), sleep=sleep, limiter=limiter)
    token = await tokens.start()
    assert token.userpool_id == "pool-1"
    assert server.requests == 3
    assert limiter.acquired == 3
    assert len(slept) == 2


async def test_retry_after_is_honoured(server, session):
    server.script = [_status(429, {"statusCode": 429}, **{"Retry-After": "7"})]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    await provider(server, session, FakeClock(), sleep=sleep).start()
    assert slept and slept[0] >= 7


async def test_transport_error_is_retried(server, session):
    server.script = [lambda: None]
    token = await provider(server, session, FakeClock()).start()
    assert token.userpool_id == "pool-1"
    assert server.requests == 2


async def test_persistent_failure_gives_up_after_max_attempts(server, session):
    server.script = [_status(503)] * 10
    tokens = provider(server, session, FakeClock(), max_attempts=3)
    with pytest.raises(ApiError, match="after 3 attempts") as caught:
        await tokens.start()
    assert server.requests == 3
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "failure",
    [
        _status(401, {"statusCode": 401, "message": f"bad secret {SECRET}"}),
        _status(403),
        _status(200, {"statusCode": 400, "apiCode": 2020, "message": f"wrong {SECRET}"}),
        _status(404),
        _status(302),
    ],
)
async def test_rejection_is_fatal_and_secret_free(server, session, failure):
    server.script = [failure]
    tokens = provider(server, session, FakeClock())
    with pytest.raises(AuthRejected) as caught:
        await tokens.start()
    assert server.requests == 1
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None or SECRET not in str(caught.value.__cause__)


async def test_failed_fetch_can_be_tried_again(server, session):
    server.script = [_status(401)]
    tokens = provider(server, session, FakeClock())
    with pytest.raises(AuthRejected):
        await tokens.start()
    assert (await tokens.get()).userpool_id == "pool-1"


async def test_cancelled_caller_does_not_cancel_shared_fetch(server, session):
    server.delay_seconds = 0.1
    tokens = provider(server, session, FakeClock())
    impatient = asyncio.ensure_future(tokens.get())
    patient = asyncio.ensure_future(tokens.get())
    await asyncio.sleep(0.02)
    impatient.cancel()
    token = await patient
    assert token.userpool_id == "pool-1"
    assert server.requests == 1
