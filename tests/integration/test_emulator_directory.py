"""The directory endpoints answer as authing-api-more.md describes, in both auth modes, and
agree with check-session-status: list-users, get-user-loggedin-apps,
list-application-active-users, kick-users, list-applications, and the runtime changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from emulator_api import MODES, ApiClient

from audit_job.emulator import Emulator, EmulatorOptions, hashed_active
from audit_job.emulator.endpoints.users import kick_fails

SEED = 5
APPS = ("app-a=CRM", "app-b=Mail", "app-c")
APP_IDS = ["app-a", "app-b", "app-c"]
USERS = 120


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorOptions(seed=SEED, users=USERS, apps=APPS)) as emu:
        yield emu


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture(params=MODES)
def api(request, emulator, session) -> ApiClient:
    return ApiClient(session, emulator.url, request.param)


def ids(envelope: dict[str, Any]) -> list[str]:
    assert envelope["statusCode"] == 200, envelope
    return [user["userId"] for user in envelope["data"]["list"]]


def expected_active(emu: Emulator, app_id: str, index: int) -> bool:
    """The rule for a directory pair, written out independently of the server's code."""
    directory = emu.directory
    app = directory.app(app_id)
    user_id = f"user-{index:06d}"
    return (
        directory.logged_in(index, app)
        and hashed_active(app_id, user_id, SEED, emu.options.active_share)
        and (app_id, user_id) not in emu.world.kicked
    )


# -- list-users: paging ------------------------------------------------------------------------


async def test_list_users_pages_in_creation_order(api):
    first = await api.list_users()
    assert first["data"]["totalCount"] == USERS
    assert ids(first) == [f"user-{n:06d}" for n in range(1, 11)]  # page 1, limit 10 by default
    page3 = await api.list_users(options={"pagination": {"page": 3, "limit": 50}})
    assert ids(page3) == [f"user-{n:06d}" for n in range(101, 121)]
    beyond = await api.list_users(options={"pagination": {"page": 4, "limit": 50}})
    assert (beyond["data"]["totalCount"], ids(beyond)) == (USERS, [])
    everyone = await api.all_users({"options": {"sort": [{"field": "createdAt", "order": "asc"}]}})
    assert everyone == [f"user-{n:06d}" for n in range(1, USERS + 1)]
    newest = await api.all_users({"options": {"sort": [{"field": "createdAt", "order": "desc"}]}})
    assert newest == everyone[::-1]


async def test_list_users_records(api, emulator):
    envelope = await api.list_users(options={"pagination": {"page": 1, "limit": 50}})
    users = envelope["data"]["list"]
    created = [user["createdAt"] for user in users]
    assert created == sorted(created) and len(set(created)) == len(created)
    for user in users:
        index = int(user["userId"].removeprefix("user-"))
        assert user["email"] == f"{user['username']}@example.com"
        assert user["username"].endswith(f".{index:06d}")
        assert user["status"] in ("Activated", "Suspended", "Deactivated", "Resigned", "Archived")
        apps = [app.app_id for app in emulator.directory.logged_in_apps(index)]
        assert (user["loginsCount"] > 0) is bool(apps)
        assert user["lastLoginApp"] in ([*apps] or [None])
    assert "customData" not in users[0]
    extra = await api.list_users(options={"withCustomData": True, "withIdentities": True})
    assert (extra["data"]["list"][0]["customData"], extra["data"]["list"][0]["identities"]) == (
        {},
        [],
    )


BAD_PAGING = [
    ({"page": 0}, "参数 page 格式错误"),
    ({"limit": 0}, "参数 limit 格式错误"),
    ({"limit": 220}, "limit must less than 50"),
    ({"limit": 51}, "limit must less than 50"),
    ({"page": -1}, "参数 page 格式错误"),
    ({"page": "1"}, "参数 page 格式错误"),
    ({"limit": 2.5}, "参数 limit 格式错误"),
]


@pytest.mark.parametrize(("pagination", "message"), BAD_PAGING)
async def test_list_users_paging_errors(api, pagination, message):
    envelope = await api.list_users(options={"pagination": pagination})
    assert (envelope["statusCode"], envelope["message"]) == (400, message)
    assert envelope["data"] is None
    assert api.last_status == 200  # body error style: HTTP 200 with the error envelope


async def test_list_users_limit_50_is_allowed_and_http_style_errors(api, emulator):
    envelope = await api.list_users(options={"pagination": {"limit": 50}})
    assert len(ids(envelope)) == 50
    emulator.configure(error_style="http")
    refused = await api.list_users(options={"pagination": {"page": 0}})
    assert (api.last_status, refused["statusCode"]) == (400, 400)


# -- list-users: filters -----------------------------------------------------------------------


async def test_status_filter(api, emulator):
    directory = emulator.directory
    for status in ("Activated", "Suspended"):
        body = {"advancedFilter": [{"field": "status", "operator": "EQUAL", "value": status}]}
        found = await api.all_users(body)
        want = [f"user-{n:06d}" for n in range(1, USERS + 1) if directory.status(n) == status]
        assert found == want and want
    others = await api.all_users(
        {"advancedFilter": [{"field": "status", "operator": "NOT_EQUAL", "value": "Activated"}]}
    )
    assert sorted(others) == sorted(
        f"user-{n:06d}" for n in range(1, USERS + 1) if directory.status(n) != "Activated"
    )
    bad = await api.list_users(
        advancedFilter=[{"field": "status", "operator": "EQUAL", "value": "invalid"}]
    )
    assert (bad["statusCode"], bad["message"]) == (400, "参数 status 格式错误")


async def test_logged_in_apps_filter_and_keywords(api, emulator):
    directory = emulator.directory
    app_a, app_b = directory.app("app-a"), directory.app("app-b")
    body = {"advancedFilter": [{"field": "loggedInApps", "operator": "IN", "value": ["app-a"]}]}
    assert await api.all_users(body, limit=7) == [
        f"user-{n:06d}" for n in range(1, USERS + 1) if directory.logged_in(n, app_a)
    ]
    both = {
        "advancedFilter": [
            {"field": "loggedInApps", "operator": "IN", "value": ["app-a", "app-b", "nope"]},
            {"field": "status", "operator": "EQUAL", "value": "Activated"},
        ]
    }
    assert await api.all_users(both) == [
        f"user-{n:06d}"
        for n in range(1, USERS + 1)
        if (directory.logged_in(n, app_a) or directory.logged_in(n, app_b))
        and directory.status(n) == "Activated"
    ]
    name, username = directory.names(7)
    for keyword in (name, username.split(".")[0].upper(), "000007@example"):
        want = [
            f"user-{n:06d}"
            for n in range(1, USERS + 1)
            if keyword in directory.names(n)[0]
            or keyword.casefold() in f"{directory.username(n)}@example.com"
        ]
        assert "user-000007" in want
        assert await api.all_users({"keywords": keyword}) == want
    unmodelled = await api.list_users(
        advancedFilter=[{"field": "lastLogin", "operator": "BETWEEN", "value": [0, 1]}]
    )
    assert unmodelled["statusCode"] == 400
    assert "lastLogin" in unmodelled["message"]
    unsorted = await api.list_users(options={"sort": [{"field": "lastLogin", "order": "asc"}]})
    assert unsorted["statusCode"] == 400


async def test_legacy_get_list_users(api, emulator):
    envelope = await api.get("/api/v3/list-users", {"page": 2, "limit": 5})
    assert ids(envelope) == [f"user-{n:06d}" for n in range(6, 11)]
    suspended = await api.get("/api/v3/list-users", {"status": "Suspended", "limit": 50})
    assert ids(suspended) == [
        f"user-{n:06d}" for n in range(1, USERS + 1) if emulator.directory.status(n) == "Suspended"
    ]
    for query, message in (
        ({"limit": 220}, "limit must less than 50"),
        ({"page": "x"}, "参数 page 格式错误"),
    ):
        refused = await api.get("/api/v3/list-users", query)
        assert (refused["statusCode"], refused["message"]) == (400, message)


async def test_directory_off_lists_nobody(session):
    async with Emulator(seed=SEED) as emu:
        api = ApiClient(session, emu.url)
        envelope = await api.list_users()
        assert (envelope["data"]["totalCount"], ids(envelope)) == (0, [])
        apps = await api.get("/api/v3/list-applications")
        assert apps["data"] == {"list": [], "totalCount": 0}
        assert (await api.loggedin_apps("user-1"))["data"] == []


# -- get-user-loggedin-apps and consistency --------------------------------------------------


async def test_loggedin_apps(api, emulator):
    directory = emulator.directory
    for index in (1, 2, 3, 50, 120):
        envelope = await api.loggedin_apps(f"user-{index:06d}")
        assert envelope["statusCode"] == 200
        want = [
            app.app_id
            for app in (directory.app(a) for a in APP_IDS)
            if directory.logged_in(index, app)
        ]
        assert [app["appId"] for app in envelope["data"]] == want
        for app in envelope["data"]:
            assert set(app) == {"appId", "appName", "appLogo", "appLoginUrl"}
    names = {
        app["appId"]: app["appName"] for app in (await api.loggedin_apps("user-000001"))["data"]
    }
    assert names.get("app-a", "CRM") == "CRM"
    username = directory.username(50)
    by_name = await api.loggedin_apps(username, userIdType="username")
    assert by_name["data"] == (await api.loggedin_apps("user-000050"))["data"]
    outside = await api.loggedin_apps("someone-else")
    assert (outside["statusCode"], outside["data"]) == (200, [])
    missing = await api.loggedin_apps("missing-user-1")
    assert (missing["statusCode"], missing["apiCode"], missing["message"]) == (
        404,
        2004,
        "用户不存在",
    )
    empty = await api.loggedin_apps("")
    assert (empty["statusCode"], empty["message"]) == (400, "参数 userId 格式错误")
    bad_type = await api.loggedin_apps("user-000001", userIdType="nickname")
    assert bad_type["statusCode"] == 400


async def test_check_listing_and_loggedin_apps_agree(emulator, session):
    api = ApiClient(session, emulator.url)
    active_by_app = {app_id: set(await api.active_users(app_id, limit=9)) for app_id in APP_IDS}
    for index in range(1, USERS + 1):
        user_id = f"user-{index:06d}"
        ever = {app["appId"] for app in (await api.loggedin_apps(user_id))["data"]}
        for app_id in APP_IDS:
            active = await api.active(app_id, user_id)
            assert active is expected_active(emulator, app_id, index), (app_id, user_id)
            assert active is (user_id in active_by_app[app_id]), (app_id, user_id)
            if active:
                assert app_id in ever
    assert all(active_by_app.values())  # the sample is not vacuous
    # By username and email too: check-session-status takes any identifier (spec 1).
    some = next(iter(active_by_app["app-a"]))
    username = emulator.directory.username(int(some[5:]))
    assert await api.active("app-a", username) is True
    assert await api.active("app-a", f"{username}@example.com") is True


async def test_outside_ids_keep_todays_rules(emulator, session, tmp_path):
    api = ApiClient(session, emulator.url)
    assert await api.active("app-a", "missing-user-1") is None
    assert (await api.check("missing-app-1", "user-000001"))["statusCode"] == 499
    truth = tmp_path / "truth.csv"
    truth.write_text("app-a,outsider,true\napp-a,user-000001,true\n")
    emulator.configure(truth_file=str(truth))
    assert await api.active("app-a", "outsider") is True
    # The truth file does not reach directory pairs: listings could not agree with it.
    assert await api.active("app-a", "user-000001") is expected_active(emulator, "app-a", 1)
    # A directory user checked against an app outside the directory: the plain hash.
    assert await api.active("app-z", "user-000003") is hashed_active("app-z", "user-000003", SEED)


async def test_active_users_paging_and_errors(api, emulator):
    want = [f"user-{n:06d}" for n in range(1, USERS + 1) if expected_active(emulator, "app-b", n)]
    envelope = await api.post(
        "/api/v3/list-application-active-users",
        {"appId": "app-b", "options": {"pagination": {"page": 1, "limit": 3}}},
    )
    assert envelope["data"]["totalCount"] == len(want)
    assert ids(envelope) == want[:3]
    for body, status, message in (
        ({"appId": ""}, 400, "参数 appId 格式错误"),
        (
            {"appId": "app-b", "options": {"pagination": {"limit": 99}}},
            400,
            "limit must less than 50",
        ),
        ({"appId": "missing-app-9"}, 499, "应用不存在"),
    ):
        refused = await api.post("/api/v3/list-application-active-users", body)
        assert (refused["statusCode"], refused["message"]) == (status, message)


# -- kick-users --------------------------------------------------------------------------------


def active_pair(emu: Emulator, app_id: str) -> str:
    return next(f"user-{n:06d}" for n in range(1, USERS + 1) if expected_active(emu, app_id, n))


async def test_kick_makes_the_pair_inactive_everywhere(api, emulator):
    user_id = active_pair(emulator, "app-a")
    index = int(user_id[5:])
    other_active = {a for a in APP_IDS if expected_active(emulator, a, index)}
    assert await api.active("app-a", user_id) is True
    envelope = await api.kick(user_id, ["app-a"])
    assert (envelope["statusCode"], envelope["data"]) == (200, {"success": True})
    assert await api.active("app-a", user_id) is False
    assert user_id not in await api.active_users("app-a")
    for app_id in other_active - {"app-a"}:  # other apps untouched
        assert await api.active(app_id, user_id) is True
    ever = [app["appId"] for app in (await api.loggedin_apps(user_id))["data"]]
    assert "app-a" in ever  # history stays: the user did log in once
    again = await api.kick(user_id, ["app-a"], options={"userIdType": "user_id"})
    assert again["data"] == {"success": True}  # kicking an inactive pair still succeeds
    stats = emulator.stats()
    assert stats["kicks_per_user"] == {user_id: 2}
    assert stats["kicked_pairs"] == [f"app-a\t{user_id}"]
    assert stats["requests_by_endpoint"]["kick-users"] == 2
    emulator.reset_stats()
    assert emulator.stats()["kicked_pairs"] == [f"app-a\t{user_id}"]  # state, not a counter


async def test_kick_by_username_and_outside_users(api, emulator):
    user_id = active_pair(emulator, "app-c")
    username = emulator.directory.username(int(user_id[5:]))
    envelope = await api.kick(username, ["app-c"], options={"userIdType": "username"})
    assert envelope["data"]["success"] is True
    assert await api.active("app-c", user_id) is False
    outsider = next(f"u{n}" for n in range(100) if hashed_active("app-x", f"u{n}", SEED))
    assert await api.active("app-x", outsider) is True
    await api.kick(outsider, ["app-x"])
    assert await api.active("app-x", outsider) is False
    assert emulator.stats()["kicks_per_user"] == {user_id: 1, outsider: 1}


async def test_kick_errors_change_nothing(api, emulator):
    user_id = active_pair(emulator, "app-a")
    cases = [
        ({"appIds": []}, 400, "参数 appIds 格式错误"),
        ({"appIds": ["app-a"] * 51}, 400, "appIds must contain no more than 50 elements"),
        ({"appIds": ["app-a", 3]}, 400, "参数 appIds 格式错误"),
        ({"appIds": ["app-a"], "userId": ""}, 400, "参数 userId 格式错误"),
        ({"appIds": ["app-a", "missing-app-1"]}, 499, "应用不存在"),
        ({"appIds": ["app-a"], "userId": "missing-user-1"}, 404, "用户不存在"),
        ({"appIds": ["app-a"], "options": {"userIdType": "x"}}, 400, "参数 userIdType 格式错误"),
    ]
    for body, status, message in cases:
        envelope = await api.post("/api/v3/kick-users", {"userId": user_id, **body})
        assert (envelope["statusCode"], envelope["message"]) == (status, message), body
    assert await api.active("app-a", user_id) is True
    fifty = await api.kick(user_id, ["app-a"] * 50)
    assert fifty["data"]["success"] is True
    stats = emulator.stats()
    assert stats["kicks_per_user"] == {user_id: 1}
    assert stats["answers"]["bad_request"] == 5


@pytest.mark.parametrize("style", ["false", "error"])
async def test_kick_failures_are_per_user_and_stable(api, emulator, style):
    emulator.configure(kick_failure_share=0.5, kick_failure=style)
    users = [f"user-{n:06d}" for n in range(1, 21)]
    failing = {u for u in users if kick_fails(u, SEED, 0.5)}
    assert 0 < len(failing) < len(users)
    for user_id in users:
        for _ in range(2):  # a failing user fails every time
            envelope = await api.kick(user_id, ["app-a", "app-b"])
            if user_id in failing and style == "false":
                assert (envelope["statusCode"], envelope["data"]) == (200, {"success": False})
            elif user_id in failing:
                assert (envelope["statusCode"], envelope["data"]) == (400, None)
            else:
                assert envelope["data"] == {"success": True}
    stats = emulator.stats()
    assert stats["kick_failures_per_user"] == dict.fromkeys(failing, 2)
    assert stats["kicks_per_user"] == dict.fromkeys(set(users) - failing, 2)
    kicked_users = {pair.split("\t")[1] for pair in stats["kicked_pairs"]}
    assert kicked_users == set(users) - failing


# -- list-applications -------------------------------------------------------------------------


async def test_list_applications(api, emulator):
    envelope = await api.get("/api/v3/list-applications")
    assert envelope["data"]["totalCount"] == 3
    listed = envelope["data"]["list"]
    assert [(a["appId"], a["appName"]) for a in listed] == [
        ("app-a", "CRM"),
        ("app-b", "Mail"),
        ("app-c", "app-c"),
    ]
    assert all(a["userPoolId"] == "emulator-userpool" for a in listed)
    paged = await api.get("/api/v3/list-applications", {"page": 2, "limit": 2})
    assert [a["appId"] for a in paged["data"]["list"]] == ["app-c"]
    node_defaults = {"isIntegrateApp": False, "isSelfBuiltApp": False, "ssoEnabled": False}
    assert (await api.get("/api/v3/list-applications", node_defaults))["data"]["totalCount"] == 3
    python_style = await api.get("/api/v3/list-applications", {"all": "True"})
    assert python_style["data"]["totalCount"] == 3
    mail = await api.get("/api/v3/list-applications", {"keywords": "mAiL"})
    assert [a["appId"] for a in mail["data"]["list"]] == ["app-b"]
    for query, message in (
        ({"limit": 51}, "limit must less than 50"),
        ({"page": 0}, "参数 page 格式错误"),
        ({"ssoEnabled": "maybe"}, "参数 ssoEnabled 格式错误"),
    ):
        refused = await api.get("/api/v3/list-applications", query)
        assert (refused["statusCode"], refused["message"]) == (400, message)


# -- runtime changes ---------------------------------------------------------------------------


async def control(session: aiohttp.ClientSession, emu: Emulator, path: str, body: Any) -> Any:
    async with session.post(emu.url + path, json=body) as response:
        return response.status, await response.json()


async def test_removed_user_is_gone_everywhere(emulator, session):
    api = ApiClient(session, emulator.url)
    user_id = active_pair(emulator, "app-a")
    status, answer = await control(
        session, emulator, "/__directory/users/remove", {"userIds": [user_id, "outsider"]}
    )
    assert (status, answer) == (200, {"removed": [user_id, "outsider"]})
    assert (await api.check("app-a", user_id))["statusCode"] == 404
    assert (await api.check("app-a", "outsider"))["statusCode"] == 404
    assert (await api.loggedin_apps(user_id))["statusCode"] == 404
    assert (await api.kick(user_id, ["app-a"]))["statusCode"] == 404
    everyone = await api.all_users()
    assert user_id not in everyone and len(everyone) == USERS - 1
    assert (await api.list_users())["data"]["totalCount"] == USERS - 1
    assert user_id not in await api.active_users("app-a")
    status, answer = await control(session, emulator, "/__directory/users/add", {"count": 2})
    assert answer == {"added": ["user-000121", "user-000122"]}
    assert (await api.all_users())[-2:] == ["user-000121", "user-000122"]
    async with session.get(emulator.url + "/__directory") as response:
        summary = await response.json()
    assert (summary["users"], summary["removedUsers"], summary["removedOtherUsers"]) == (
        122,
        1,
        ["outsider"],
    )
    status, answer = await control(session, emulator, "/__directory/users/remove", {"userIds": "x"})
    assert status == 400 and "userIds" in answer["error"]


async def test_removed_and_disabled_apps(emulator, session):
    api = ApiClient(session, emulator.url)
    user_a = active_pair(emulator, "app-a")
    user_b = active_pair(emulator, "app-b")
    await control(session, emulator, "/__directory/apps/remove", {"appIds": ["app-a"]})
    await control(session, emulator, "/__directory/apps/disable", {"appIds": ["app-b"]})
    assert (await api.check("app-a", user_a))["statusCode"] == 499
    assert (await api.post("/api/v3/list-application-active-users", {"appId": "app-a"}))[
        "statusCode"
    ] == 499
    assert await api.active("app-b", user_b) is False  # disabled: found, nobody active
    assert await api.active_users("app-b") == []
    listed = await api.get("/api/v3/list-applications")
    assert [a["appId"] for a in listed["data"]["list"]] == ["app-b", "app-c"]
    assert "app-a" not in [a["appId"] for a in (await api.loggedin_apps(user_a))["data"]]
    gone = await api.all_users(
        {"advancedFilter": [{"field": "loggedInApps", "operator": "IN", "value": ["app-a"]}]}
    )
    assert gone == []
    await control(session, emulator, "/__directory/apps/enable", {"appIds": ["app-b"]})
    assert await api.active("app-b", user_b) is True
    _, added = await control(session, emulator, "/__directory/apps/add", {"apps": ["app-d=Wiki"]})
    assert added == {"added": ["app-d"]}
    names = [a["appName"] for a in (await api.get("/api/v3/list-applications"))["data"]["list"]]
    assert names == ["Mail", "app-c", "Wiki"]


# -- the gate covers the new endpoints ---------------------------------------------------------


async def test_one_bucket_and_faults_for_every_endpoint(emulator, session):
    api = ApiClient(session, emulator.url)
    emulator.configure(rate=3, burst=3)
    answers = [
        await api.list_users(),
        await api.get("/api/v3/list-applications"),
        await api.check("app-a", "user-000001"),
        await api.loggedin_apps("user-000001"),
        await api.kick("user-000001", ["app-a"]),
    ]
    assert [a["statusCode"] for a in answers] == [200, 200, 200, 429, 429]
    assert emulator.stats()["throttled"] == 2
    emulator.configure(rate=0, fault_busy=1.0)
    busy = await api.list_users()
    assert (busy["statusCode"], busy["apiCode"]) == (500, 1000)
    assert (await api.kick("user-000001", ["app-a"]))["apiCode"] == 1000
    assert emulator.stats()["kicks_per_user"] == {}


async def test_signature_covers_query_and_nested_body(emulator, session):
    api = ApiClient(session, emulator.url, secret="sk-wrong")
    assert (await api.get("/api/v3/list-applications", {"page": 1}))["statusCode"] == 401
    assert (await api.list_users(options={"pagination": {"page": 1}}))["statusCode"] == 401
    good = ApiClient(session, emulator.url)
    # A query changed after signing fails: the server rebuilds the string from what it got.
    query = {"page": "1", "limit": "5"}
    headers = await good._auth_headers("GET", "/api/v3/list-applications", query)
    async with session.get(
        emulator.url + "/api/v3/list-applications", params={**query, "limit": "6"}, headers=headers
    ) as response:
        assert (await response.json())["statusCode"] == 401
    # A nested value is signed as compact JSON (vector V4): changing it breaks the signature.
    body = {"options": {"pagination": {"page": 1, "limit": 5}}}
    headers = await good._auth_headers("POST", "/api/v3/list-users", body)
    tampered = b'{"options":{"pagination":{"page":1,"limit":6}}}'
    async with session.post(
        emulator.url + "/api/v3/list-users", data=tampered, headers=headers
    ) as response:
        assert (await response.json())["statusCode"] == 401
    stats = emulator.stats()
    assert stats["auth_failures_by_reason"] == {"bad_signature": 4}
