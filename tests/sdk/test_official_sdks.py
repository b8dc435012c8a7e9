"""The official SDKs, unmodified, get the emulator's truth: the emulator speaks their protocol.

authing-node-sdk 4.0.1 signs every call (spec 2): POST bodies by their top-level keys, GET
queries as axios sends them (its defaults included, e.g. listApplications' three `false`
flags); authing 5.1.0 (Python) uses a management token (spec 4) and drops `None` keys.
Besides checkSessionStatus they call listUsers (and the legacy GET), listApplications,
getUserLoggedinApps, listApplicationActiveUsers and kickUsers against a generated directory.
Both are installed by tests/sdk/install.sh. Missing tools skip locally and fail under CI=true.
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


# -- the directory endpoints through the SDKs' own methods -------------------------------------

DIRECTORY = {"seed": SEED, "users": 60, "apps": ("app-a=CRM", "app-b=Mail", "app-c")}


@pytest.fixture
async def directory_emulator() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorOptions(**DIRECTORY)) as emu:
        yield emu


def directory_ids(emu: Emulator, keep: Any = None) -> list[str]:
    return [f"user-{n:06d}" for n in range(1, 61) if keep is None or keep(n)]


def active_in(emu: Emulator, app_id: str) -> list[str]:
    return [u for u in directory_ids(emu) if emu.truth(app_id, u) is True]


async def run_node_calls(
    node_modules: Path, host: str, calls: list[list[Any]]
) -> list[dict[str, Any]]:
    payload = {
        "nodeModules": str(node_modules),
        "host": host,
        "accessKeyId": DEFAULT_ACCESS_KEY_ID,
        "accessKeySecret": DEFAULT_ACCESS_KEY_SECRET,
        "calls": calls,
    }
    process = await asyncio.create_subprocess_exec(
        "node",
        str(HERE / "management_calls.js"),
        json.dumps(payload, ensure_ascii=False),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    results = json.loads(stdout)
    assert all(result["ok"] for result in results), results
    return [result["answer"] for result in results]


def user_ids(envelope: dict[str, Any]) -> list[str]:
    assert envelope["statusCode"] == 200, envelope
    return [user["userId"] for user in envelope["data"]["list"]]


async def test_node_sdk_lists_users(node_sdk, directory_emulator):
    emu = directory_emulator
    app_a = emu.directory.app("app-a")
    ever_a = directory_ids(emu, lambda n: emu.directory.logged_in(n, app_a))
    activated = directory_ids(emu, lambda n: emu.directory.status(n) == "Activated")
    sort = [{"field": "createdAt", "order": "asc"}]
    calls = [
        ["listUsers", {"options": {"pagination": {"page": 2, "limit": 7}, "sort": sort}}],
        ["listUsers", {"options": {"sort": [{"field": "createdAt", "order": "desc"}]}}],
        [
            "listUsers",
            {
                "advancedFilter": [
                    {"field": "loggedInApps", "operator": "IN", "value": ["app-a"]},
                ],
                "options": {"pagination": {"page": 1, "limit": 50}, "sort": sort},
            },
        ],
        [
            "listUsers",
            {
                "advancedFilter": [{"field": "status", "operator": "EQUAL", "value": "Activated"}],
                "options": {"pagination": {"page": 1, "limit": 50}},
            },
        ],
        ["listUsers", {"keywords": emu.directory.username(9)}],
        ["listUsers", {"options": {"withCustomData": True, "withIdentities": True}}],
        # The failures the SDK's own tests expect (authing-api-more.md 1d).
        ["listUsers", {"options": {"pagination": {"page": 0}}}],
        ["listUsers", {"options": {"pagination": {"limit": 0}}}],
        ["listUsers", {"options": {"pagination": {"limit": 220}}}],
        [
            "listUsers",
            {"advancedFilter": [{"field": "status", "operator": "EQUAL", "value": "invalid"}]},
        ],
        ["listUsersLegacy", {"page": 3, "limit": 5}],
        ["listUsersLegacy", {"status": "Activated", "limit": 50}],
    ]
    answers = await run_node_calls(node_sdk, emu.url, calls)
    page2, newest, ever, active_status, by_name, extra = answers[:6]
    everyone = directory_ids(emu)
    assert page2["data"]["totalCount"] == 60
    assert user_ids(page2) == everyone[7:14]
    assert user_ids(newest) == everyone[::-1][:10]
    assert (ever["data"]["totalCount"], user_ids(ever)) == (len(ever_a), ever_a[:50])
    assert user_ids(active_status) == activated[:50]
    assert user_ids(by_name) == ["user-000009"]
    assert extra["data"]["list"][0]["customData"] == {}
    assert [(a["statusCode"], a["message"]) for a in answers[6:10]] == [
        (400, "参数 page 格式错误"),
        (400, "参数 limit 格式错误"),
        (400, "limit must less than 50"),
        (400, "参数 status 格式错误"),
    ]
    assert user_ids(answers[10]) == everyone[10:15]
    assert user_ids(answers[11]) == activated[:50]
    stats = emu.stats()
    assert stats["auth_failures"] == 0
    assert stats["requests_by_endpoint"] == {"list-users": 10, "list-users-legacy": 2}


async def test_node_sdk_applications_loggedin_apps_and_active_users(node_sdk, directory_emulator):
    emu = directory_emulator
    user = next(u for u in directory_ids(emu) if emu.truth("app-b", u) is True)
    ever = [a.app_id for a in emu.directory.logged_in_apps(int(user[5:]))]
    calls = [
        ["listApplications", {}],  # sends isIntegrateApp/isSelfBuiltApp/ssoEnabled=false
        ["listApplications", {"page": 2, "limit": 2}],
        ["listApplications", {"keywords": "mail"}],
        ["listApplications", {"limit": 51}],
        ["getUserLoggedinApps", {"userId": user}],
        [
            "getUserLoggedinApps",
            {"userId": emu.directory.username(int(user[5:])), "userIdType": "username"},
        ],
        ["getUserLoggedinApps", {"userId": ""}],
        ["getUserLoggedinApps", {"userId": "missing-user-1"}],
        # Raw UTF-8, `+` and a space in a signed query (axios sends `+` for the space).
        ["getUserLoggedinApps", {"userId": "张三+a b@example.com"}],
        [
            "listApplicationActiveUsers",
            {"appId": "app-b", "options": {"pagination": {"page": 1, "limit": 50}}},
        ],
    ]
    answers = await run_node_calls(node_sdk, emu.url, calls)
    listed, page2, mail, too_many, apps, by_name, empty, missing, outsider, active = answers
    assert listed["data"]["totalCount"] == 3
    assert [(a["appId"], a["appName"]) for a in listed["data"]["list"]] == [
        ("app-a", "CRM"),
        ("app-b", "Mail"),
        ("app-c", "app-c"),
    ]
    assert [a["appId"] for a in page2["data"]["list"]] == ["app-c"]
    assert [a["appId"] for a in mail["data"]["list"]] == ["app-b"]
    assert (too_many["statusCode"], too_many["message"]) == (400, "limit must less than 50")
    assert isinstance(apps["data"], list)  # as the SDK's own test expects
    assert [a["appId"] for a in apps["data"]] == ever and "app-b" in ever
    assert by_name["data"] == apps["data"]
    assert (empty["statusCode"], empty["message"]) == (400, "参数 userId 格式错误")
    assert (missing["statusCode"], missing["apiCode"]) == (404, 2004)
    assert (outsider["statusCode"], outsider["data"]) == (200, [])  # outside the directory
    assert user_ids(active) == active_in(emu, "app-b")
    assert emu.stats()["auth_failures"] == 0


async def test_node_sdk_kicks_users(node_sdk, directory_emulator):
    emu = directory_emulator
    users = active_in(emu, "app-a")[:3]
    assert users
    calls = [["kickUsers", {"appIds": ["app-a", "app-b"], "userId": u}] for u in users]
    calls += [
        ["kickUsers", {"appIds": [], "userId": users[0]}],
        [
            "kickUsers",
            {"appIds": ["app-a"], "userId": users[0], "options": {"userIdType": "user_id"}},
        ],
        ["listApplicationActiveUsers", {"appId": "app-a"}],
    ]
    answers = await run_node_calls(node_sdk, emu.url, calls)
    assert [a["data"] for a in answers[: len(users)]] == [{"success": True}] * len(users)
    assert (answers[-3]["statusCode"], answers[-3]["message"]) == (400, "参数 appIds 格式错误")
    assert answers[-2]["data"] == {"success": True}
    for user in users:
        assert emu.truth("app-a", user) is False
        assert emu.truth("app-b", user) is False
    assert not set(users) & set(user_ids(answers[-1]))
    stats = emu.stats()
    assert stats["kicks_per_user"] == {users[0]: 2, **dict.fromkeys(users[1:], 1)}
    assert set(stats["kicked_pairs"]) == {f"{a}\t{u}" for a in ("app-a", "app-b") for u in users}


def run_python_directory_calls(python_sdk: Any, host: str, users: list[str]) -> list[Any]:
    management_client, _ = python_sdk
    client = management_client(
        access_key_id=DEFAULT_ACCESS_KEY_ID, access_key_secret=DEFAULT_ACCESS_KEY_SECRET, host=host
    )
    sort = [{"field": "createdAt", "order": "asc"}]
    return [
        client.list_users(options={"pagination": {"page": 2, "limit": 25}, "sort": sort}),
        client.list_users(
            advanced_filter=[{"field": "loggedInApps", "operator": "IN", "value": ["app-c"]}],
            options={"pagination": {"page": 1, "limit": 50}},
        ),
        client.list_users(options={"pagination": {"limit": 220}}),
        *(client.kick_users(app_ids=["app-c"], user_id=u) for u in users),
        client.kick_users(app_ids=[], user_id=users[0]),
        client.get_user_loggedin_apps(user_id=users[0]),
        client.list_applications(page=1, limit=2),
        client.list_application_active_users(app_id="app-c"),
    ]


async def test_python_sdk_lists_and_kicks(python_sdk, directory_emulator):
    emu = directory_emulator
    users = active_in(emu, "app-c")[:2]
    app_c = emu.directory.app("app-c")
    answers = await asyncio.to_thread(run_python_directory_calls, python_sdk, emu.url, users)
    page2, ever, too_many = answers[:3]
    kicks = answers[3 : 3 + len(users)]
    refused, apps, listed, active = answers[3 + len(users) :]
    assert (page2["data"]["totalCount"], user_ids(page2)) == (60, directory_ids(emu)[25:50])
    assert user_ids(ever) == directory_ids(emu, lambda n: emu.directory.logged_in(n, app_c))
    assert (too_many["statusCode"], too_many["message"]) == (400, "limit must less than 50")
    assert [k["data"] for k in kicks] == [{"success": True}] * len(users)
    assert (refused["statusCode"], refused["message"]) == (400, "参数 appIds 格式错误")
    assert "app-c" in [a["appId"] for a in apps["data"]]
    assert [a["appId"] for a in listed["data"]["list"]] == ["app-a", "app-b"]
    assert not set(users) & set(user_ids(active))
    for user in users:
        assert emu.truth("app-c", user) is False
    stats = emu.stats()
    assert stats["auth_failures"] == 0
    assert stats["token_requests"] == 1
    assert stats["kicks_per_user"] == dict.fromkeys(users, 1)
