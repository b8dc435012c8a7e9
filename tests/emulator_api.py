"""Calls the emulator's Authing API the way the official SDKs do, in either auth mode.

Signature mode signs a POST's top-level body keys and a GET's query parameters (spec 2, vector
V4); GET values are sent as the strings that were signed. Token mode fetches one management
token and sends it as a bearer (spec 4).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from audit_job import signing
from audit_job.emulator import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, DEFAULT_USERPOOL_ID

MODES = ("signature", "token")
TOKEN_PATH = "/api/v3/get-management-token"


class ApiClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        mode: str = "signature",
        *,
        key_id: str = DEFAULT_ACCESS_KEY_ID,
        secret: str = DEFAULT_ACCESS_KEY_SECRET,
        lang: str = "zh-CN",
    ) -> None:
        assert mode in MODES, mode
        self.session = session
        self.url = url
        self.mode = mode
        self.key_id = key_id
        self.secret = secret
        self.lang = lang
        self._token: str | None = None
        self.last_headers: Mapping[str, str] = {}
        self.last_status = 0

    async def _auth_headers(self, method: str, path: str, params: dict[str, Any]) -> dict[str, str]:
        headers = {
            "x-authing-sdk-version": "audit-job:0.1.0",
            "x-authing-lang": self.lang,
        }
        if self.mode == "token":
            if self._token is None:
                body = {"accessKeyId": self.key_id, "accessKeySecret": self.secret}
                async with self.session.post(self.url + TOKEN_PATH, json=body) as response:
                    envelope = await response.json()
                assert envelope["statusCode"] == 200, envelope
                self._token = envelope["data"]["access_token"]
            headers["authorization"] = f"Bearer {self._token}"
            headers["x-authing-userpool-id"] = DEFAULT_USERPOOL_ID
            return headers
        headers.update(
            {
                "x-authing-signature-nonce": signing.new_nonce(),
                "x-authing-signature-method": "HMAC-SHA1",
                "x-authing-signature-version": "1.0",
                "date": signing.http_date(time.time()),
            }
        )
        message = signing.string_to_sign(method, path, headers, params)
        headers["authorization"] = signing.authorization(self.key_id, self.secret, message)
        return headers

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = await self._auth_headers("POST", path, body)
        headers["content-type"] = "application/json"
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        async with self.session.post(self.url + path, data=raw, headers=headers) as response:
            self.last_status, self.last_headers = response.status, response.headers
            return json.loads(await response.read())

    async def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        query = {key: signing.canonical_value(value) for key, value in (params or {}).items()}
        headers = await self._auth_headers("GET", path, query)
        async with self.session.get(self.url + path, params=query, headers=headers) as response:
            self.last_status, self.last_headers = response.status, response.headers
            return json.loads(await response.read())

    async def check(self, app_id: str, user_id: str) -> dict[str, Any]:
        return await self.post(signing.CHECK_SESSION_PATH, {"appId": app_id, "userId": user_id})

    async def active(self, app_id: str, user_id: str) -> bool | None:
        """check-session-status's `data.active`, None for a not-found answer."""
        envelope = await self.check(app_id, user_id)
        if envelope["statusCode"] != 200:
            return None
        return envelope["data"]["active"]

    async def list_users(self, **body: Any) -> dict[str, Any]:
        return await self.post("/api/v3/list-users", body)

    async def all_users(self, body: dict[str, Any] | None = None, limit: int = 50) -> list[str]:
        """Every userId list-users returns for `body`, paging to the end (page x limit >=
        totalCount, authing-api-more.md 1d)."""
        found: list[str] = []
        page = 1
        while True:
            options = dict((body or {}).get("options", {}))
            options["pagination"] = {"page": page, "limit": limit}
            envelope = await self.list_users(**{**(body or {}), "options": options})
            assert envelope["statusCode"] == 200, envelope
            found += [user["userId"] for user in envelope["data"]["list"]]
            if page * limit >= envelope["data"]["totalCount"]:
                return found
            page += 1

    async def active_users(self, app_id: str, limit: int = 50) -> list[str]:
        found: list[str] = []
        page = 1
        while True:
            body = {"appId": app_id, "options": {"pagination": {"page": page, "limit": limit}}}
            envelope = await self.post("/api/v3/list-application-active-users", body)
            assert envelope["statusCode"] == 200, envelope
            found += [user["userId"] for user in envelope["data"]["list"]]
            if page * limit >= envelope["data"]["totalCount"]:
                return found
            page += 1

    async def loggedin_apps(self, user_id: str, **query: Any) -> dict[str, Any]:
        return await self.get("/api/v3/get-user-loggedin-apps", {"userId": user_id, **query})

    async def kick(self, user_id: str, app_ids: list[str], **body: Any) -> dict[str, Any]:
        return await self.post("/api/v3/kick-users", {"appIds": app_ids, "userId": user_id, **body})
