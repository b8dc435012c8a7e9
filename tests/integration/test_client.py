"""AuthingClient against the real emulator on loopback: truth, faults, stops, throttles, TLS."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from helpers import make_self_signed
from pydantic import SecretStr

from audit_job.client import AuthingClient, ClientStats
from audit_job.commands.check import check_pair
from audit_job.config import AuthingSettings, LoadedConfig, Settings
from audit_job.emulator import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    PAIR_SEPARATOR,
    Emulator,
    EmulatorOptions,
    truth,
)
from audit_job.errors import AuthRejected, ConfigError, TlsRejected
from audit_job.limiter import AdaptiveRateLimiter
from audit_job.models import AnswerKind, CheckResult, CheckStatus, Pair

MODES = ["signature", "token"]
FAST_BACKOFF = {"backoff_base_seconds": 0.001, "backoff_cap_seconds": 0.02}


def pairs(count: int, missing_every: int = 0) -> list[Pair]:
    made = []
    for i in range(count):
        app = f"app-{i % 7}"
        user = f"user-{i}"
        if missing_every and i % missing_every == 1:
            user = f"missing-{user}"
        if missing_every and i % missing_every == 2:
            app = f"missing-{app}"
        made.append(Pair(app, user))
    return made


def client_for(
    url: str,
    auth: str = "signature",
    *,
    secret: str = DEFAULT_ACCESS_KEY_SECRET,
    rate: float = 100_000,
    limiter: AdaptiveRateLimiter | None = None,
    authing: dict[str, Any] | None = None,
    **kwargs: Any,
) -> AuthingClient:
    settings = AuthingSettings(
        host=url, access_key_id=DEFAULT_ACCESS_KEY_ID, auth=auth, **(authing or {})
    )
    return AuthingClient(
        settings,
        access_key_id=DEFAULT_ACCESS_KEY_ID,
        access_key_secret=secret,
        limiter=limiter or AdaptiveRateLimiter(rate),
        **kwargs,
    )


async def check_all(
    client: AuthingClient, todo: list[Pair], workers: int = 16
) -> dict[Pair, CheckResult]:
    """A fixed worker pool over a queue, as the pipeline runs it."""
    queue: asyncio.Queue[Pair | None] = asyncio.Queue()
    for pair in todo:
        queue.put_nowait(pair)
    for _ in range(workers):
        queue.put_nowait(None)
    results: dict[Pair, CheckResult] = {}

    async def worker() -> None:
        while (pair := await queue.get()) is not None:
            results[pair] = await client.check(pair)

    async with asyncio.TaskGroup() as tg:
        for _ in range(workers):
            tg.create_task(worker())
    return results


def assert_truth(results: dict[Pair, CheckResult], seed: int = 0) -> None:
    for pair, result in results.items():
        expected = truth(pair.app_id, pair.user_id, seed)
        if expected is None:
            assert result.status is CheckStatus.ERROR, (pair, result)
            assert (result.status_code, result.api_code) in {(404, 2004), (499, 2011)}
            assert result.request_id
        else:
            assert result.status is CheckStatus.ACTIVE if expected else CheckStatus.INACTIVE, (
                pair,
                result,
            )
            assert result.active is expected


def asked_per_pair(emu: Emulator) -> dict[Pair, int]:
    counted = {}
    for key, n in emu.stats()["per_pair"].items():
        app, user = key.split(PAIR_SEPARATOR)
        counted[Pair(app, user)] = n
    return counted


@pytest.mark.parametrize("auth", MODES)
async def test_both_modes_get_the_truth(auth):
    async with Emulator(EmulatorOptions()) as emu, client_for(emu.url, auth) as client:
        todo = pairs(300, missing_every=10)
        results = await check_all(client, todo)
        assert len(results) == 300
        assert_truth(results)
        assert all(r.attempts == 1 for r in results.values())
        assert client.stats.requests == 300
        assert client.stats.token_requests == (1 if auth == "token" else 0)
        assert emu.stats()["auth_failures"] == 0
        permanent = client.stats.answers[AnswerKind.PERMANENT]
        assert permanent == sum(1 for p in todo if truth(p.app_id, p.user_id) is None)


@pytest.mark.parametrize("error_style", ["body", "http"])
async def test_http_error_style_gives_the_same_answers(error_style):
    options = EmulatorOptions(error_style=error_style)
    async with Emulator(options) as emu, client_for(emu.url) as client:
        assert_truth(await check_all(client, pairs(60, missing_every=5)))


@pytest.mark.parametrize("auth", MODES)
async def test_faults_still_give_the_truth_within_max_attempts(auth):
    options = EmulatorOptions(
        seed=3,
        fault_reset=0.08,
        fault_hang=0.04,
        fault_html_502=0.08,
        fault_5xx=0.08,
        fault_bad_json=0.08,
        fault_busy=0.04,
        hang_seconds=30,
    )
    max_attempts = 12
    async with (
        Emulator(options) as emu,
        client_for(
            emu.url,
            auth,
            max_attempts=max_attempts,
            concurrency=32,
            authing={"timeout_seconds": 0.3},
            **FAST_BACKOFF,
        ) as client,
    ):
        todo = pairs(200, missing_every=10)
        results = await check_all(client, todo, workers=32)
        stats = emu.stats()
    gave_up = [
        r
        for r in results.values()
        if r.status is CheckStatus.ERROR and r.status_code not in (404, 499)
    ]
    # 40 % faults per attempt: a pair still failing after 12 attempts has odds 0.4**12.
    assert len(gave_up) <= 1
    assert all(r.attempts == max_attempts for r in gave_up)
    assert_truth({p: r for p, r in results.items() if r not in gave_up}, seed=3)
    asked = asked_per_pair(emu)
    assert max(asked.values()) <= max_attempts
    assert sum(asked.values()) == client.stats.requests
    for pair, result in results.items():
        assert asked[pair] == result.attempts
    assert sum(stats["faults"].values()) > 40
    assert set(stats["faults"]) == {"reset", "hang", "html_502", "5xx", "bad_json", "busy"}
    assert client.stats.transport_errors > 0
    assert client.stats.retries == client.stats.requests - len(todo)


async def test_wrong_secret_stops_after_k_answers_not_hundreds():
    async with (
        Emulator(EmulatorOptions()) as emu,
        client_for(emu.url, secret="sk-wrong-secret", concurrency=4, **FAST_BACKOFF) as client,
    ):
        with pytest.raises(ExceptionGroup) as caught:
            await check_all(client, pairs(500), workers=4)
        errors = caught.value.exceptions
        assert errors and all(isinstance(e, AuthRejected) for e in errors)
        message = str(errors[0])
        assert "3 times in a row" in message
        assert emu.url in message and "access_key_secret" in message
        assert "sk-wrong-secret" not in message
        assert "clock" not in message  # the clocks agree
        # K answers stop the run; at most the requests already in flight also come back.
        assert emu.stats()["check_requests"] <= 3 + 4
        with pytest.raises(AuthRejected):
            await client.check(Pair("app", "later"))
        assert emu.stats()["check_requests"] <= 3 + 4


async def test_clock_skew_is_reported():
    async with (
        Emulator(EmulatorOptions()) as emu,
        client_for(emu.url, clock=lambda: time.time() + 3600, **FAST_BACKOFF) as client,
    ):
        with pytest.raises(AuthRejected, match=r"local clock is 36\d\d s ahead"):
            await client.check(Pair("app", "user"))
        assert emu.stats()["auth_failures_by_reason"] == {"stale_date": 3}


async def test_token_mode_wrong_secret_fails_before_any_pair():
    async with Emulator(EmulatorOptions()) as emu:
        client = client_for(emu.url, "token", secret="sk-wrong-secret")
        with pytest.raises(AuthRejected) as caught:
            await client.__aenter__()
        assert "sk-wrong-secret" not in str(caught.value)
        assert emu.stats()["token_requests"] == 1
        assert emu.stats()["check_requests"] == 0


async def test_expired_token_is_refreshed_once_and_retried():
    frozen = time.time()  # the client never sees its token age, only the server does
    async with (
        Emulator(EmulatorOptions(token_ttl=1)) as emu,
        client_for(emu.url, "token", clock=lambda: frozen, **FAST_BACKOFF) as client,
    ):
        first = await client.check(Pair("app", "first"))
        assert first.attempts == 1
        await asyncio.sleep(1.1)
        results = await check_all(client, pairs(40), workers=20)
        assert_truth(results)
        assert all(r.attempts <= 2 for r in results.values())
        stats = emu.stats()
        assert stats["tokens_issued"] == 2
        assert stats["auth_failures_by_reason"].get("expired_token", 0) >= 1
        assert client.stats.token_requests == 2
        assert client.failure is None


async def test_token_refused_mid_run_stops_every_check():
    frozen = time.time()
    async with (
        Emulator(EmulatorOptions(token_ttl=1)) as emu,
        client_for(emu.url, "token", clock=lambda: frozen, **FAST_BACKOFF) as client,
    ):
        await client.check(Pair("app", "first"))
        emu.configure(access_key_secret="sk-rotated")
        await asyncio.sleep(1.1)
        with pytest.raises(ExceptionGroup) as caught:
            await check_all(client, pairs(40), workers=8)
        assert all(isinstance(e, AuthRejected) for e in caught.value.exceptions)
        with pytest.raises(AuthRejected, match="management token refused"):
            await client.check(Pair("app", "later"))
        assert emu.stats()["token_requests"] == 2


async def test_throttling_slows_the_limiter_and_it_recovers():
    offset = 0.0

    def clock() -> float:
        return time.monotonic() + offset

    limiter = AdaptiveRateLimiter(400, clock=clock)
    lowest = [limiter.current_rate]
    async with (
        Emulator(EmulatorOptions(rate=100, burst=10)) as emu,
        client_for(emu.url, limiter=limiter, max_attempts=10, concurrency=32) as client,
    ):

        async def watch() -> None:
            while True:
                lowest.append(limiter.current_rate)
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        try:
            results = await check_all(client, pairs(200), workers=32)
        finally:
            watcher.cancel()
        assert_truth(results)
        assert emu.stats()["throttled"] > 0
        assert client.stats.throttled == emu.stats()["throttled"]
        assert sum(r.throttled for r in results.values()) == client.stats.throttled
        assert max(asked_per_pair(emu).values()) <= 10
    assert min(lowest) < 400 * 0.75
    offset += 120.0  # recovery is a function of time
    assert limiter.current_rate == pytest.approx(400)


@asynccontextmanager
async def serve(app: web.Application, ssl_context: ssl.SSLContext | None = None):
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_redirect_is_not_followed():
    async with Emulator(EmulatorOptions()) as emu:
        app = web.Application()

        async def moved(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(emu.url + request.path)

        app.router.add_route("*", "/{tail:.*}", moved)
        async with (
            serve(app) as url,
            client_for(
                url, max_attempts=2, authing={"auth_failure_limit": 4}, **FAST_BACKOFF
            ) as client,
        ):
            answer, envelope, latency_ms = await client.check_once(Pair("app", "user"))
            assert answer.kind is AnswerKind.AUTH  # wrong host, scheme or path (spec 6 row 7)
            assert answer.http_status == 307
            assert envelope is None
            assert latency_ms > 0
            result = await client.check(Pair("app", "user"))
            assert result.status is CheckStatus.ERROR
            assert result.attempts == 2
            assert result.http_status == 307
            # The fourth redirect in a row: every pair would meet it, so the run stops.
            with pytest.raises(AuthRejected, match="wrong host, scheme or path"):
                await client.check(Pair("app", "other"))
        assert emu.stats()["check_requests"] == 0


async def test_check_once_returns_the_envelope():
    async with Emulator(EmulatorOptions()) as emu, client_for(emu.url) as client:
        answer, envelope, _ = await client.check_once(Pair("app-1", "missing-u"))
        assert answer.kind is AnswerKind.PERMANENT
        assert envelope is not None
        assert envelope["statusCode"] == 404 and envelope["apiCode"] == 2004


async def test_latency_hook_and_stats():
    seen: list[float] = []
    stats = ClientStats(observe_latency=seen.append)
    async with Emulator(EmulatorOptions()) as emu, client_for(emu.url, stats=stats) as client:
        result = await client.check(Pair("app", "user"))
    assert result.latency_ms is not None
    assert len(seen) == 1 == len(stats.latency_samples)
    assert stats.responses == {200: 1}
    assert stats.snapshot()["requests"] == 1


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


@asynccontextmanager
async def https_emulator(self_signed: tuple[Path, Path]) -> AsyncIterator[tuple[str, Emulator]]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*self_signed)
    emu = Emulator(EmulatorOptions())
    async with serve(emu.app, context) as url:
        yield url, emu


async def test_tls_verified_by_default_refuses_self_signed(self_signed):
    async with https_emulator(self_signed) as (url, emu), client_for(url) as client:
        with pytest.raises(TlsRejected) as caught:
            await client.check(Pair("app", "user"))
        assert url in str(caught.value) and "verify_tls" in str(caught.value)
        with pytest.raises(TlsRejected):
            await client.check(Pair("app", "other"))
        assert emu.stats()["check_requests"] == 0


async def test_tls_verification_off_accepts_self_signed(self_signed, caplog):
    caplog.set_level(logging.WARNING, logger="audit_job.client")
    async with (
        https_emulator(self_signed) as (url, _),
        client_for(url, "token", authing={"verify_tls": False}) as client,
    ):
        result = await client.check(Pair("app", "user"))
        assert result.active is truth("app", "user")
    assert any("NOT verified" in r.getMessage() for r in caplog.records)


async def test_tls_with_ca_bundle(self_signed):
    cert = str(self_signed[0])
    async with (
        https_emulator(self_signed) as (url, _),
        client_for(url, authing={"ca_bundle": cert}) as client,
    ):
        result = await client.check(Pair("app", "user"))
        assert result.active is truth("app", "user")


def loaded(url: str, secret: str = DEFAULT_ACCESS_KEY_SECRET) -> LoadedConfig:
    authing = AuthingSettings(
        host=url, access_key_id=DEFAULT_ACCESS_KEY_ID, access_key_secret=SecretStr(secret)
    )
    return LoadedConfig(Settings(authing=authing), "test", [])


async def test_check_command_service_exit_codes():
    async with Emulator(EmulatorOptions()) as emu:
        found = await check_pair(loaded(emu.url), "app-1", "user-1")
        assert found.exit_code == 0 and found.failure is None
        assert found.as_row()["active"] is truth("app-1", "user-1")
        assert found.envelope is not None and found.envelope["statusCode"] == 200
        missing = await check_pair(loaded(emu.url), "app-1", "missing-user")
        assert missing.exit_code == 3
        assert missing.as_row()["api_code"] == 2004
        rejected = await check_pair(loaded(emu.url, "sk-wrong"), "app-1", "user-1")
        assert rejected.exit_code == 1
        assert isinstance(rejected.failure, AuthRejected)
        assert "sk-wrong" not in str(rejected.failure)
        with pytest.raises(ConfigError):
            await check_pair(loaded(emu.url), " ", "user-1")
