"""The emulator answers like Authing (the Authing wire-protocol spec, authing-api.md) and its
faults show."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from emulator_api import ApiClient

import audit_job.emulator
from audit_job import signing
from audit_job.emulator import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_USERPOOL_ID,
    Emulator,
    EmulatorOptions,
    truth,
)

CHECK = signing.CHECK_SESSION_PATH
TOKEN = "/api/v3/get-management-token"
SEED = 7


def find_pair(want: bool, seed: int = SEED, app_id: str = "app-1") -> tuple[str, str]:
    for n in range(1000):
        if truth(app_id, f"user-{n}", seed) is want:
            return app_id, f"user-{n}"
    raise AssertionError("no such pair")


ACTIVE = find_pair(True)
INACTIVE = find_pair(False)
USER_MISSING = ("app-1", "missing-user-17")
APP_MISSING = ("missing-app-3", "user-1")


def signed(
    params: dict[str, Any],
    *,
    key_id: str = DEFAULT_ACCESS_KEY_ID,
    secret: str = DEFAULT_ACCESS_KEY_SECRET,
    date: str | None = None,
    nonce: str | None = None,
    sdk_version: str = "audit-job:0.1.0",
    lang: str = "zh-CN",
) -> dict[str, str]:
    """Headers in the order authing-node-sdk 4.0.1 puts them on the wire (spec 3, V1)."""
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "x-authing-signature-nonce": nonce or signing.new_nonce(),
        "x-authing-signature-method": "HMAC-SHA1",
        "x-authing-signature-version": "1.0",
        "user-agent": "axios/1.7.7",
        "x-authing-sdk-version": sdk_version,
        "x-authing-lang": lang,
        "date": date.resolve()
        if isinstance(date, _MinutesAgo)
        else (date or signing.http_date(time.time())),
    }
    message = signing.string_to_sign("POST", CHECK, headers, params)
    headers["authorization"] = signing.authorization(key_id, secret, message)
    return headers


def body_of(params: dict[str, Any]) -> bytes:
    return json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorOptions(seed=SEED)) as emu:
        yield emu


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    **kwargs: Any,
) -> tuple[int, Mapping[str, str], bytes]:
    async with session.post(url, data=body, headers=headers, **kwargs) as response:
        return response.status, response.headers, await response.read()


async def check_signed(
    session: aiohttp.ClientSession, emu: Emulator, app_id: str, user_id: str, **sign: Any
) -> tuple[int, dict[str, Any]]:
    params = {"appId": app_id, "userId": user_id}
    status, _, raw = await post(session, emu.url + CHECK, body_of(params), signed(params, **sign))
    return status, json.loads(raw)


# -- signature mode ----------------------------------------------------------------------------


@pytest.mark.parametrize("pair", [ACTIVE, INACTIVE])
async def test_signed_request_gets_the_truth(emulator, session, pair):
    status, envelope = await check_signed(session, emulator, *pair)
    assert status == 200
    assert envelope["statusCode"] == 200
    assert envelope["data"] == {"active": truth(*pair, SEED)}
    assert envelope["requestId"]


async def test_client_signer_is_accepted(emulator, session):
    signer = signing.Signer(
        DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, sdk_version="audit-job:0.1.0"
    )
    for app_id, user_id in (ACTIVE, INACTIVE):
        headers = signer.headers_for_check(app_id, user_id)
        body = signing.check_body(app_id, user_id)
        _, _, raw = await post(session, emulator.url + CHECK, body, headers)
        assert json.loads(raw)["data"]["active"] is truth(app_id, user_id, SEED)


async def test_node_sdk_v1_headers_accepted(emulator, session):
    # Exactly what authing-node-sdk 4.0.1 sends (spec 3, V1), with a current date.
    params = {"appId": "app1", "userId": "user1"}
    headers = signed(params, sdk_version="authing-node-sdk:4.0.1")
    body = b'{"appId":"app1","userId":"user1"}'
    assert len(body) == 33
    status, _, raw = await post(session, emulator.url + CHECK, body, headers)
    assert status == 200
    assert json.loads(raw)["data"] == {"active": truth("app1", "user1", SEED)}


async def test_epoch_millisecond_date_and_utf8_ids_accepted(emulator, session):
    user_id = "张三+a b@example.com"
    date = str(int(time.time() * 1000))
    _, envelope = await check_signed(session, emulator, "app-1", user_id, date=date)
    assert envelope["statusCode"] == 200
    assert envelope["data"]["active"] is truth("app-1", user_id, SEED)


@pytest.mark.parametrize(
    ("pair", "status_code", "api_code", "message"),
    [(USER_MISSING, 404, 2004, "用户不存在"), (APP_MISSING, 499, "2011", "应用不存在")],
)
@pytest.mark.parametrize("style", ["body", "http"])
async def test_not_found(emulator, session, pair, status_code, api_code, message, style):
    emulator.configure(error_style=style)
    status, envelope = await check_signed(session, emulator, *pair)
    assert status == (200 if style == "body" else status_code)
    assert (envelope["statusCode"], envelope["apiCode"], envelope["message"]) == (
        status_code,
        api_code,
        message,
    )
    assert truth(*pair, SEED) is None


async def test_english_messages(emulator, session):
    _, envelope = await check_signed(session, emulator, *USER_MISSING, lang="en-US")
    assert envelope["message"] == "User does not exist"


class _MinutesAgo(str):
    """A `date` header value computed when the request is signed, not at collection time
    (a suite running for minutes would otherwise move it back inside the window)."""

    def __new__(cls, minutes: float) -> _MinutesAgo:
        made = super().__new__(cls, f"{minutes} minutes ago")
        made.minutes = minutes
        return made

    def resolve(self) -> str:
        return signing.http_date(time.time() - self.minutes * 60)


def _minutes_ago(minutes: float) -> _MinutesAgo:
    return _MinutesAgo(minutes)


REJECTIONS = {
    "wrong secret": ({"secret": "sk-wrong"}, "bad_signature"),
    "unknown key": ({"key_id": "ak-other"}, "unknown_key"),
    "stale date": ({"date": _minutes_ago(16)}, "stale_date"),
    "future date": ({"date": _minutes_ago(-16)}, "stale_date"),
    "garbage date": ({"date": "yesterday"}, "bad_date"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
async def test_signature_rejections(emulator, session, case):
    sign, reason = REJECTIONS[case]
    status, envelope = await check_signed(session, emulator, *ACTIVE, **sign)
    assert status == 200
    assert envelope["statusCode"] == 401
    assert envelope["apiCode"] == 2020
    assert envelope["message"]
    assert "data" not in envelope or envelope["data"] is None
    assert emulator.stats()["auth_failures_by_reason"] == {reason: 1}


async def test_date_inside_window_accepted(emulator, session):
    for minutes in (14, -14):
        _, envelope = await check_signed(session, emulator, *ACTIVE, date=_minutes_ago(minutes))
        assert envelope["statusCode"] == 200


@pytest.mark.parametrize("header", ["x-authing-signature-nonce", "date", "x-authing-lang"])
async def test_missing_signed_header_rejected(emulator, session, header):
    params = {"appId": ACTIVE[0], "userId": ACTIVE[1]}
    headers = signed(params)
    del headers[header]
    _, _, raw = await post(session, emulator.url + CHECK, body_of(params), headers)
    assert json.loads(raw)["statusCode"] == 401


async def test_missing_authorization_rejected(emulator, session):
    params = {"appId": ACTIVE[0], "userId": ACTIVE[1]}
    headers = signed(params)
    del headers["authorization"]
    _, _, raw = await post(session, emulator.url + CHECK, body_of(params), headers)
    assert json.loads(raw)["statusCode"] == 401
    assert emulator.stats()["auth_failures_by_reason"] == {"missing_auth": 1}


async def test_tampered_body_rejected(emulator, session):
    params = {"appId": ACTIVE[0], "userId": ACTIVE[1]}
    headers = signed(params)
    tampered = body_of({"appId": ACTIVE[0], "userId": "someone-else"})
    _, _, raw = await post(session, emulator.url + CHECK, tampered, headers)
    assert json.loads(raw)["statusCode"] == 401


async def test_reused_nonce_rejected(emulator, session):
    nonce = signing.new_nonce()
    _, first = await check_signed(session, emulator, *ACTIVE, nonce=nonce)
    _, second = await check_signed(session, emulator, *ACTIVE, nonce=nonce)
    assert (first["statusCode"], second["statusCode"]) == (200, 401)
    assert emulator.stats()["auth_failures_by_reason"] == {"nonce_reused": 1}


async def test_rejected_nonce_is_not_burnt(emulator, session):
    nonce = signing.new_nonce()
    _, first = await check_signed(session, emulator, *ACTIVE, nonce=nonce, secret="sk-wrong")
    _, second = await check_signed(session, emulator, *ACTIVE, nonce=nonce)
    assert (first["statusCode"], second["statusCode"]) == (401, 200)


async def test_http_error_style_rejects_with_401(emulator, session):
    emulator.configure(error_style="http")
    status, envelope = await check_signed(session, emulator, *ACTIVE, secret="sk-wrong")
    assert (status, envelope["statusCode"]) == (401, 401)


async def test_configured_credentials(session):
    async with Emulator(access_key_id="ak-x", access_key_secret="sk-x", seed=SEED) as emu:
        _, good = await check_signed(session, emu, *ACTIVE, key_id="ak-x", secret="sk-x")
        _, bad = await check_signed(session, emu, *ACTIVE)
    assert (good["statusCode"], bad["statusCode"]) == (200, 401)


# -- token mode --------------------------------------------------------------------------------


async def fetch_token(
    session: aiohttp.ClientSession, emu: Emulator, secret: str = DEFAULT_ACCESS_KEY_SECRET
) -> tuple[int, dict[str, Any]]:
    body = {"accessKeyId": DEFAULT_ACCESS_KEY_ID, "accessKeySecret": secret}
    async with session.post(emu.url + TOKEN, json=body) as response:
        return response.status, await response.json()


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def check_with_token(
    session: aiohttp.ClientSession,
    emu: Emulator,
    pair: tuple[str, str],
    authorization: str,
    userpool_id: str = DEFAULT_USERPOOL_ID,
) -> tuple[int, dict[str, Any]]:
    headers = {
        "authorization": authorization,
        "x-authing-userpool-id": userpool_id,
        "x-authing-lang": "zh-CN",
        "x-authing-sdk-version": "audit-job:0.1.0",
    }
    body = signing.check_body(*pair)
    status, _, raw = await post(session, emu.url + CHECK, body, headers)
    return status, json.loads(raw)


async def test_token_flow(emulator, session):
    status, envelope = await fetch_token(session, emulator)
    assert (status, envelope["statusCode"]) == (200, 200)
    token = envelope["data"]["access_token"]
    assert envelope["data"]["expires_in"] == 7200
    claims = jwt_claims(token)
    assert claims["scoped_userpool_id"] == DEFAULT_USERPOOL_ID
    assert claims["exp"] - claims["iat"] == 7200
    assert abs(claims["iat"] - time.time()) < 5
    for pair in (ACTIVE, INACTIVE):
        _, answer = await check_with_token(session, emulator, pair, f"Bearer {token}")
        assert answer["data"] == {"active": truth(*pair, SEED)}
    _, bare = await check_with_token(session, emulator, ACTIVE, token)  # Java SDK style
    assert bare["statusCode"] == 200
    _, missing = await check_with_token(session, emulator, USER_MISSING, f"Bearer {token}")
    assert (missing["statusCode"], missing["apiCode"]) == (404, 2004)
    stats = emulator.stats()
    assert (stats["token_requests"], stats["tokens_issued"], stats["auth_failures"]) == (1, 1, 0)


async def test_token_rejections(emulator, session):
    _, envelope = await fetch_token(session, emulator)
    token = envelope["data"]["access_token"]
    _, pool = await check_with_token(session, emulator, ACTIVE, f"Bearer {token}", "other-pool")
    assert (pool["statusCode"], pool["apiCode"]) == (401, 2224)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    _, unknown = await check_with_token(session, emulator, ACTIVE, f"Bearer {forged}")
    assert unknown["statusCode"] == 401
    assert emulator.stats()["auth_failures_by_reason"] == {
        "userpool_mismatch": 1,
        "unknown_token": 1,
    }


async def test_expired_token_rejected(session):
    async with Emulator(token_ttl=1, seed=SEED) as emu:
        _, envelope = await fetch_token(session, emu)
        assert envelope["data"]["expires_in"] == 1
        token = envelope["data"]["access_token"]
        _, fresh = await check_with_token(session, emu, ACTIVE, f"Bearer {token}")
        await asyncio.sleep(1.1)
        _, stale = await check_with_token(session, emu, ACTIVE, f"Bearer {token}")
        assert (fresh["statusCode"], stale["statusCode"]) == (200, 401)
        assert emu.stats()["auth_failures_by_reason"] == {"expired_token": 1}


@pytest.mark.parametrize("style", ["body", "http"])
async def test_wrong_credentials_get_no_token(emulator, session, style):
    emulator.configure(error_style=style)
    status, envelope = await fetch_token(session, emulator, secret="sk-wrong")
    assert status == (200 if style == "body" else 401)
    assert envelope["statusCode"] == 401
    assert envelope["message"]
    assert "apiCode" in envelope
    assert envelope.get("data") is None


# -- faults, throttling, delay -------------------------------------------------------------------


async def send_check(session: aiohttp.ClientSession, emu: Emulator, timeout: float = 5.0):
    params = {"appId": ACTIVE[0], "userId": ACTIVE[1]}
    return await post(
        session,
        emu.url + CHECK,
        body_of(params),
        signed(params),
        timeout=aiohttp.ClientTimeout(total=timeout),
    )


async def test_fault_5xx(emulator, session):
    emulator.configure(fault_5xx=1.0)
    seen = set()
    for _ in range(30):
        status, _, raw = await send_check(session, emulator)
        assert status in (500, 503)
        if raw:
            assert json.loads(raw)["statusCode"] == status
        seen.add(bool(raw))
    assert seen == {True, False}  # both JSON and empty bodies occur
    assert emulator.stats()["faults"] == {"5xx": 30}


async def test_fault_html_502(emulator, session):
    emulator.configure(fault_html_502=1.0)
    status, headers, raw = await send_check(session, emulator)
    assert status == 502
    assert headers["Content-Type"].startswith("text/html")
    assert b"502 Bad Gateway" in raw


async def test_fault_bad_json(emulator, session):
    emulator.configure(fault_bad_json=1.0)
    status, headers, raw = await send_check(session, emulator)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    with pytest.raises(ValueError):
        json.loads(raw)


async def test_fault_busy(emulator, session):
    emulator.configure(fault_busy=1.0)
    status, _, raw = await send_check(session, emulator)
    envelope = json.loads(raw)
    assert status == 200
    assert envelope["apiCode"] == 1000


async def test_fault_reset(emulator, session):
    emulator.configure(fault_reset=1.0)
    with pytest.raises(aiohttp.ClientConnectionError):
        await send_check(session, emulator)
    assert emulator.stats()["faults"] == {"reset": 1}


async def test_fault_hang_outlasts_client_timeout(emulator, session):
    emulator.configure(fault_hang=1.0)
    assert emulator.options.hang_seconds >= 60
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await send_check(session, emulator, timeout=0.3)
    assert time.monotonic() - started < 5
    emulator.configure(hang_seconds=0.1)  # then the server closes without an answer
    with pytest.raises(aiohttp.ClientConnectionError):
        await send_check(session, emulator)
    assert emulator.stats()["faults"] == {"hang": 2}


async def test_faults_switch_mid_run_over_http(emulator, session):
    async with session.post(emulator.url + "/__config", json={"fault_5xx": 1.0}) as response:
        assert response.status == 200
        assert (await response.json())["fault_5xx"] == 1.0
    assert (await send_check(session, emulator))[0] in (500, 503)
    async with session.post(emulator.url + "/__config", json={"fault_5xx": 0}) as response:
        assert response.status == 200
    assert (await send_check(session, emulator))[0] == 200
    async with session.post(emulator.url + "/__config", json={"fault_nope": 1}) as response:
        assert response.status == 400
    async with session.post(emulator.url + "/__config", json={"fault_busy": 2}) as response:
        assert response.status == 400
    async with session.get(emulator.url + "/__config") as response:
        shown = await response.json()
    assert shown["access_key_secret"] == "***"


async def test_faults_follow_probability_and_seed(session):
    async def draw() -> list[int]:
        async with Emulator(seed=3, fault_5xx=0.3, fault_busy=0.2) as emu:
            codes = []
            for _ in range(200):
                status, _, raw = await send_check(session, emu)
                codes.append(status if status != 200 else json.loads(raw)["statusCode"])
            return codes

    first, second = await draw(), await draw()
    assert first == second
    faults = sum(code != 200 for code in first)
    assert 70 < faults < 130  # expected 100 of 200


async def test_faults_spare_token_endpoint_unless_asked(emulator, session):
    emulator.configure(fault_5xx=1.0)
    _, envelope = await fetch_token(session, emulator)
    assert envelope["statusCode"] == 200
    emulator.configure(faults_on_token=True)
    async with session.post(emulator.url + TOKEN, json={}) as response:
        assert response.status in (500, 503)


async def test_rate_limit_answers_429_with_retry_after(emulator, session):
    emulator.configure(rate=5, burst=5)
    results = [await send_check(session, emulator) for _ in range(10)]
    statuses = [status for status, _, _ in results]
    assert statuses.count(200) == 5
    assert statuses.count(429) == 5
    for status, headers, raw in results:
        if status == 429:
            assert headers["Retry-After"] == "1"
            assert json.loads(raw)["statusCode"] == 429
    stats = emulator.stats()
    assert stats["throttled"] == 5
    assert stats["answers"]["throttled"] == 5
    emulator.configure(retry_after_seconds=7)
    assert (await send_check(session, emulator))[1]["Retry-After"] == "7"
    emulator.configure(retry_after=False)
    status, headers, _ = await send_check(session, emulator)
    assert status == 429
    assert "Retry-After" not in headers
    await asyncio.sleep(0.25)  # 5/s refills one token in 0.2 s
    assert (await send_check(session, emulator))[0] == 200


async def test_delay_and_concurrency(emulator, session):
    emulator.configure(delay_ms=200)
    started = time.monotonic()
    results = await asyncio.gather(*(send_check(session, emulator) for _ in range(8)))
    elapsed = time.monotonic() - started
    assert all(status == 200 for status, _, _ in results)
    assert 0.2 <= elapsed < 2.0
    stats = emulator.stats()
    assert stats["max_in_flight"] == 8
    assert stats["in_flight"] == 0


# -- stats ---------------------------------------------------------------------------------------


async def test_stats_count_everything(emulator, session):
    for pair in (ACTIVE, ACTIVE, INACTIVE, USER_MISSING, APP_MISSING):
        await check_signed(session, emulator, *pair)
    await check_signed(session, emulator, *ACTIVE, secret="sk-wrong")
    await fetch_token(session, emulator)
    async with session.post(emulator.url + CHECK, data=b"not json") as response:
        assert (await response.json())["statusCode"] == 400
    stats = emulator.stats()
    assert stats["requests_total"] == 8
    assert stats["check_requests"] == 7
    assert stats["token_requests"] == 1
    assert stats["per_pair"] == {
        "\t".join(ACTIVE): 3,
        "\t".join(INACTIVE): 1,
        "\t".join(USER_MISSING): 1,
        "\t".join(APP_MISSING): 1,
    }
    assert stats["answers"] == {
        "active": 2,
        "inactive": 1,
        "user_not_found": 1,
        "app_not_found": 1,
        "auth_failed": 1,
        "token_issued": 1,
        "bad_request": 1,
    }
    assert stats["auth_failures"] == 1
    assert stats["max_per_second"] == 8
    assert stats["max_in_flight"] == 1
    async with session.get(emulator.url + "/__stats") as response:
        assert await response.json() == stats
    async with session.post(emulator.url + "/__reset") as response:
        assert response.status == 200
    cleared = emulator.stats()
    assert cleared["requests_total"] == cleared["max_per_second"] == 0
    assert cleared["per_pair"] == cleared["answers"] == {}


async def test_max_per_second_is_a_sliding_window(emulator, session):
    # 6 requests, pause 0.6 s, 6 more: a fixed second boundary could split them, the
    # sliding window sees all 12 within one second.
    for _ in range(6):
        await send_check(session, emulator)
    await asyncio.sleep(0.6)
    for _ in range(6):
        await send_check(session, emulator)
    assert emulator.stats()["max_per_second"] == 12
    await asyncio.sleep(1.05)
    await send_check(session, emulator)
    assert emulator.stats()["max_per_second"] == 12


async def test_throughput(emulator, session):
    signer = signing.Signer(
        DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, sdk_version="audit-job:0.1.0"
    )

    async def worker(n: int) -> None:
        for i in range(100):
            app_id, user_id = "app-1", f"user-{n}-{i}"
            headers = signer.headers_for_check(app_id, user_id)
            body = signing.check_body(app_id, user_id)
            async with session.post(emulator.url + CHECK, data=body, headers=headers) as r:
                assert (await r.json())["data"]["active"] is truth(app_id, user_id, SEED)

    started = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(20)))
    elapsed = time.monotonic() - started
    stats = emulator.stats()
    assert stats["check_requests"] == 2000
    assert len(stats["per_pair"]) == 2000
    assert elapsed < 10, f"2000 requests took {elapsed:.1f} s"


# -- CLI -----------------------------------------------------------------------------------------

# Loads audit_job/cli/emulator.py by path, so this test covers the command's own module even
# while the root CLI package (audit_job/cli/__init__.py, owned elsewhere) does not import.
_CLI = """
import importlib.util, sys
import typer
import audit_job.emulator
spec = importlib.util.spec_from_file_location("emulator_cli", sys.argv.pop(1))
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
app = typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False)
module.register(app)
@app.callback()
def main() -> None:
    pass
app()
"""
_CLI_MODULE = str(Path(audit_job.emulator.__file__).parent.parent / "cli" / "emulator.py")


def test_cli_serves_until_sigterm(tmp_path):
    truth_file = tmp_path / "truth.csv"
    truth_file.write_text("app_id,user_id,active\napp-1,user-x,true\napp-1,missing-user-1,0\n")
    command = [
        sys.executable,
        "-c",
        _CLI,
        _CLI_MODULE,
        "emulator",
        "--port",
        "0",
        "--seed",
        str(SEED),
    ]
    command += ["--truth-file", str(truth_file), "--error-style", "http", "--fault-busy", "0"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line:
            process.wait(timeout=10)
            pytest.fail(
                f"emulator did not start: {process.stderr.read() if process.stderr else ''}"
            )
        assert line.startswith("emulator listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]

        async def ask() -> list[dict[str, Any]]:
            answers = []
            async with aiohttp.ClientSession() as client:
                for user_id in ("user-x", "missing-user-1", "missing-user-2"):
                    params = {"appId": "app-1", "userId": user_id}
                    async with client.post(
                        url + CHECK, data=body_of(params), headers=signed(params)
                    ) as response:
                        answers.append(await response.json())
            return answers

        answers = asyncio.run(ask())
        assert answers[0]["data"] == {"active": True}
        assert answers[1]["data"] == {"active": False}  # the file wins over the prefix
        assert answers[2]["statusCode"] == 404
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_cli_rejects_bad_options():
    command = [sys.executable, "-c", _CLI, _CLI_MODULE, "emulator", "--fault-5xx", "1.5"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--users", "-1"], "--users"),
        (["--users", "ten"], "--users"),
        (["--apps", "a,a"], "--apps"),
        (["--apps", "a,,b"], "--apps"),
        (["--login-share", "1.5"], "--login-share"),
        (["--capacity", "-3"], "--capacity"),
        (["--rate-limit-headers", "y"], "--rate-limit-headers"),
        (["--kick-failure", "maybe"], "--kick-failure"),
        (["--kick-failure-share", "2"], "--kick-failure-share"),
        (["--users", "1000000000"], "--users"),
    ],
)
def test_cli_rejects_bad_directory_and_gate_flags(flags, named):
    command = [sys.executable, "-c", _CLI, _CLI_MODULE, "emulator", *flags]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and named in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_cli_serves_a_directory_with_capacity_and_headers():
    command = [sys.executable, "-c", _CLI, _CLI_MODULE, "emulator", "--port", "0"]
    command += ["--users", "30", "--apps", "crm=CRM,mail", "--seed", str(SEED), "--rate", "100"]
    command += ["--capacity", "1", "--delay-ms", "50", "--rate-limit-headers", "ietf"]
    command += ["--kick-failure-share", "1", "--kick-failure", "error"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("emulator listening on "), line
        url = line.rsplit(" ", 1)[1]

        async def ask() -> None:
            async with aiohttp.ClientSession() as client:
                api = ApiClient(client, url)
                everyone = await api.all_users()
                assert everyone == [f"user-{n:06d}" for n in range(1, 31)]
                # A full bucket (burst defaults to the rate: 100) and a second of refill.
                assert api.last_headers["RateLimit-Limit"] == "200"
                apps = await api.get("/api/v3/list-applications")
                assert [a["appName"] for a in apps["data"]["list"]] == ["CRM", "mail"]
                kick = await api.kick("user-000001", ["crm"])
                assert kick["statusCode"] == 400  # every kick fails, as an error envelope
                await asyncio.gather(*(api.check("crm", f"user-{n:06d}") for n in range(1, 5)))
                async with client.get(url + "/__stats") as response:
                    stats = await response.json()
                assert stats["max_serving"] == 1
                assert stats["max_queued"] >= 2
                assert stats["kick_failures_per_user"] == {"user-000001": 1}

        asyncio.run(ask())
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
