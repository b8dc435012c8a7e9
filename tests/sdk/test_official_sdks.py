"""The official SDKs, unmodified, get the emulator's truth: the emulator speaks their protocol.

authing-node-sdk 4.0.1 signs every call (spec 2); authing 5.1.0 (Python) uses a management
token (spec 4). Both are installed by tests/sdk/install.sh. Missing tools skip locally and
fail under CI=true.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from audit_job.emulator import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    Emulator,
    EmulatorOptions,
    truth,
)

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
NODE_MODULES = ROOT / ".sdk" / "node" / "node_modules"
SEED = 11


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI=true: the official SDK tests must run)")
    pytest.skip(reason)


def find_pair(want: bool) -> tuple[str, str]:
    return next(
        ("app-1", f"user-{n}") for n in range(1000) if truth("app-1", f"user-{n}", SEED) is want
    )


PAIRS = [
    find_pair(True),
    find_pair(False),
    ("app-1", "missing-user-17"),
    ("missing-app-3", "user-1"),
    ("app-1", "张三+a b@example.com"),
]


def expected_envelope(app_id: str, user_id: str) -> tuple[int, Any]:
    """(statusCode, data.active or apiCode) the emulator should answer."""
    active = truth(app_id, user_id, SEED)
    if active is not None:
        return 200, active
    if app_id.startswith("missing-"):
        return 499, "2011"
    return 404, 2004


def observed(envelope: dict[str, Any]) -> tuple[int, Any]:
    if envelope["statusCode"] == 200:
        return 200, envelope["data"]["active"]
    return envelope["statusCode"], envelope["apiCode"]


@pytest.fixture(scope="session")
def node_sdk() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        unavailable("node/npm not found; install Node.js to run the authing-node-sdk test")
    result = subprocess.run(
        [str(HERE / "install.sh"), "node"], capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        unavailable(f"tests/sdk/install.sh failed: {result.stderr.strip()[-2000:]}")
    return NODE_MODULES


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorOptions(seed=SEED)) as emu:
        yield emu


async def run_node(node_modules: Path, host: str, secret: str) -> list[dict[str, Any]]:
    payload = {
        "nodeModules": str(node_modules),
        "host": host,
        "accessKeyId": DEFAULT_ACCESS_KEY_ID,
        "accessKeySecret": secret,
        "pairs": PAIRS,
    }
    process = await asyncio.create_subprocess_exec(
        "node",
        str(HERE / "check_session.js"),
        json.dumps(payload, ensure_ascii=False),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    return json.loads(stdout)


async def test_node_sdk_signature_mode(node_sdk, emulator):
    results = await run_node(node_sdk, emulator.url, DEFAULT_ACCESS_KEY_SECRET)
    assert all(result["ok"] for result in results), results
    for pair, result in zip(PAIRS, results, strict=True):
        assert observed(result["answer"]) == expected_envelope(*pair), pair
    stats = emulator.stats()
    assert stats["auth_failures"] == 0
    assert stats["token_requests"] == 0  # signed, no token
    assert stats["per_pair"] == {"\t".join(pair): 1 for pair in PAIRS}


async def test_node_sdk_wrong_secret_rejected(node_sdk, emulator):
    results = await run_node(node_sdk, emulator.url, "sk-wrong")
    for result in results:
        assert result["ok"], result  # body error style: HTTP 200 with the error envelope
        assert result["answer"]["statusCode"] == 401
    assert emulator.stats()["auth_failures_by_reason"] == {"bad_signature": len(PAIRS)}


async def test_node_sdk_sees_http_401_in_http_error_style(node_sdk, emulator):
    emulator.configure(error_style="http")
    results = await run_node(node_sdk, emulator.url, "sk-wrong")
    assert [result["status"] for result in results] == [401] * len(PAIRS)


@pytest.fixture(scope="session")
def python_sdk() -> Any:
    try:
        from authing import ManagementClient
        from authing.AuthingException import AuthingException
    except ImportError as exc:
        unavailable(f"authing==5.1.0 not importable ({exc}); run tests/sdk/install.sh python")
    return ManagementClient, AuthingException


def run_python_sdk(python_sdk: Any, host: str, secret: str) -> list[Any]:
    management_client, authing_exception = python_sdk
    client = management_client(
        access_key_id=DEFAULT_ACCESS_KEY_ID, access_key_secret=secret, host=host
    )
    results: list[Any] = []
    for app_id, user_id in PAIRS:
        try:
            results.append(client.check_session_status(app_id=app_id, user_id=user_id))
        except authing_exception as exc:
            results.append(exc)
    return results


async def test_python_sdk_token_mode(python_sdk, emulator):
    results = await asyncio.to_thread(
        run_python_sdk, python_sdk, emulator.url, DEFAULT_ACCESS_KEY_SECRET
    )
    for pair, envelope in zip(PAIRS, results, strict=True):
        assert isinstance(envelope, dict), envelope
        assert observed(envelope) == expected_envelope(*pair), pair
    stats = emulator.stats()
    assert stats["auth_failures"] == 0
    assert (stats["token_requests"], stats["tokens_issued"]) == (1, 1)  # cached for all pairs
    assert stats["per_pair"] == {"\t".join(pair): 1 for pair in PAIRS}


async def test_python_sdk_wrong_secret_rejected(python_sdk, emulator):
    _, authing_exception = python_sdk
    results = await asyncio.to_thread(run_python_sdk, python_sdk, emulator.url, "sk-wrong")
    for error in results:
        assert isinstance(error, authing_exception), error
        assert error.statusCode == 401
    stats = emulator.stats()
    assert stats["check_requests"] == 0  # no token, so no call
    assert stats["auth_failures_by_reason"] == {"bad_credentials": len(PAIRS)}
