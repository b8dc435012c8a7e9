"""The management client: the directory and remediation endpoints (authing-api-more.md).

    GET  /api/v3/list-applications     page, limit                  -> apps, paged
    POST /api/v3/list-users            advancedFilter, options       -> users, paged
    POST /api/v3/kick-users            appIds (<= 50), userId        -> data.success

It shares the check client's rules: the same signing (GET signs its query, POST its body's
top-level keys, nested values as compact JSON) or bearer token, the run's global rate
limiter (a throttle lowers it), and the retry policy of retry.py (`max_attempts` in all,
Retry-After or full-jitter backoff). An answer is a success only with HTTP 200 and envelope
statusCode 200; anything else is classified as a check would be (classify.py), retried when
retryable and returned as a failed `Reply` otherwise. Listing pages are `limit` 50 (the
API's maximum) from page 1, until page * limit reaches totalCount or a page comes back
short; only one page is held at a time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from audit_job.classify import classify_exception, classify_response, loads
from audit_job.client.headers import SDK_VERSION, bearer_headers
from audit_job.client.session import new_session
from audit_job.config import LoadedConfig
from audit_job.errors import ApiError
from audit_job.limiter import AdaptiveRateLimiter
from audit_job.models import Answer, AnswerKind
from audit_job.retry import backoff_seconds, build_retrying
from audit_job.signing import (
    SIGNATURE_METHOD,
    SIGNATURE_VERSION,
    authorization,
    canonical_value,
    http_date,
    new_nonce,
    string_to_sign,
)
from audit_job.token import TokenProvider

LIST_APPLICATIONS_PATH = "/api/v3/list-applications"
LIST_USERS_PATH = "/api/v3/list-users"
KICK_USERS_PATH = "/api/v3/kick-users"
PAGE_LIMIT = 50  # the API refuses more (limit must less than 50)
MAX_KICK_APPS = 50  # appIds per kick-users call
USER_STATUSES = ("Activated", "Suspended", "Deactivated", "Resigned", "Archived")
_SUCCESS = AnswerKind.ACTIVE  # a placeholder kind: this answer carried the data asked for


@dataclass(frozen=True, slots=True)
class Reply:
    """One call's outcome after its retries: `data` when it succeeded, else the last answer."""

    ok: bool
    data: Any
    answer: Answer
    attempts: int

    @property
    def request_id(self) -> str | None:
        return self.answer.request_id

    def describe(self) -> str:
        words = f": {self.answer.message}" if self.answer.message else ""
        return f"{self.answer.detail}{words}"


class DirectoryClient:
    """`async with DirectoryClient.from_config(loaded, limiter) as api: ...`."""

    def __init__(
        self,
        loaded: LoadedConfig,
        limiter: AdaptiveRateLimiter | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        settings = loaded.settings
        self.authing = settings.authing
        self.host = self.authing.host.rstrip("/")
        self._key_id, self._secret = loaded.require_credentials()
        self.limiter = limiter or AdaptiveRateLimiter(settings.audit.rate_per_second)
        self.max_attempts = settings.audit.max_attempts
        self.concurrency = settings.audit.concurrency
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._tokens: TokenProvider | None = None
        self.requests = 0
        self.throttled = 0

    async def __aenter__(self) -> DirectoryClient:
        self._session = new_session(self.authing, self.concurrency)
        if self.authing.auth == "token":
            self._tokens = TokenProvider(
                self._session,
                self.host,
                self._key_id,
                self._secret,
                limiter=self.limiter,
                max_attempts=self.max_attempts,
                clock=self._clock,
                timeout_seconds=self.authing.timeout_seconds,
            )
            try:
                await self._tokens.start()
            except BaseException:
                await self.aclose()
                raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- endpoints -----------------------------------------------------------------------------

    async def applications(self) -> AsyncIterator[dict[str, Any]]:
        """Every app of the pool, page by page. The boolean filters are left out: `false`
        might hide apps (unconfirmed what they filter), and no filter lists them all."""
        async for item in self._pages(
            lambda page: self.require("GET", LIST_APPLICATIONS_PATH, {"page": page})
        ):
            yield item

    async def users_page(
        self, page: int, *, status: str | None = None, logged_in_to: str | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """(totalCount, users) of one list-users page, oldest first (a stable order)."""
        filters: list[dict[str, Any]] = []
        if status is not None:
            filters.append({"field": "status", "operator": "EQUAL", "value": status})
        if logged_in_to is not None:
            filters.append({"field": "loggedInApps", "operator": "IN", "value": [logged_in_to]})
        body: dict[str, Any] = {
            "options": {
                "pagination": {"page": page, "limit": PAGE_LIMIT},
                "sort": [{"field": "createdAt", "order": "asc"}],
            }
        }
        if filters:
            body["advancedFilter"] = filters
        data = await self.require("POST", LIST_USERS_PATH, body)
        return _page_parts(data, LIST_USERS_PATH)

    async def kick(self, user_id: str, app_ids: list[str]) -> Reply:
        """One kick-users call; success only when `data.success` is true."""
        if not 1 <= len(app_ids) <= MAX_KICK_APPS:
            raise ValueError(f"kick-users takes 1..{MAX_KICK_APPS} appIds, got {len(app_ids)}")
        reply = await self.call("POST", KICK_USERS_PATH, {"appIds": app_ids, "userId": user_id})
        if reply.ok and not (isinstance(reply.data, dict) and reply.data.get("success") is True):
            answer = Answer(
                AnswerKind.PERMANENT,
                "kick-users answered data.success false",
                reply.answer.http_status,
                reply.answer.status_code,
                reply.answer.api_code,
                reply.answer.message,
                reply.answer.request_id,
            )
            return Reply(False, reply.data, answer, reply.attempts)
        return reply

    async def require(self, method: str, path: str, params: dict[str, Any]) -> Any:
        """The call's data, or ApiError naming the endpoint and the last answer."""
        reply = await self.call(method, path, params)
        if not reply.ok:
            raise ApiError(
                f"{self.host}{path}: {reply.describe()} after {reply.attempts} attempt(s)"
            )
        return reply.data

    async def _pages(self, fetch: Callable[[int], Any]) -> AsyncIterator[dict[str, Any]]:
        page = 1
        while True:
            total, items = _page_parts(await fetch(page), LIST_APPLICATIONS_PATH)
            for item in items:
                yield item
            if not items or page * PAGE_LIMIT >= total:
                return
            page += 1

    # -- one call, its retries, one attempt ------------------------------------------------------

    async def call(self, method: str, path: str, params: dict[str, Any]) -> Reply:
        state = {"attempts": 0}

        async def attempt() -> tuple[Answer, Any]:
            state["attempts"] += 1
            return await self._attempt(method, path, params)

        answer, data = await attempt()
        if answer.kind is _SUCCESS:
            return Reply(True, data, answer, 1)
        if answer.kind.is_retryable and self.max_attempts > 1:
            last: dict[str, Any] = {"data": None}

            async def retried() -> Answer:
                got, payload = await attempt()
                last["data"] = payload
                return got

            retrying = build_retrying(self.max_attempts - 1)
            first_wait = answer.retry_after_seconds
            if first_wait is None:
                first_wait = backoff_seconds(1)
            await asyncio.sleep(min(first_wait, 60.0))
            answer = await retrying(retried)
            data = last["data"]
            if answer.kind is _SUCCESS:
                return Reply(True, data, answer, state["attempts"])
        return Reply(False, None, answer, state["attempts"])

    async def _attempt(self, method: str, path: str, params: dict[str, Any]) -> tuple[Answer, Any]:
        if not self.limiter.try_acquire():
            await self.limiter.acquire()
        session = self._session
        if session is None:
            raise RuntimeError("DirectoryClient used outside `async with`")
        query: dict[str, str] = {}
        body: bytes | None = None
        if method == "GET":
            query = {key: canonical_value(value) for key, value in params.items()}
            signed: Mapping[str, Any] = query
        else:
            body = json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode()
            signed = params
        headers, token = await self._headers(method, path, signed)
        self.requests += 1
        try:
            async with session.request(
                method,
                self.host + path,
                params=query or None,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.authing.timeout_seconds),
            ) as resp:
                raw = await resp.read()
                status, resp_headers = resp.status, resp.headers
        except Exception as exc:
            return classify_exception(exc), None
        if status == 200:
            try:
                envelope = loads(raw)
            except Exception:
                envelope = None
            if isinstance(envelope, dict) and envelope.get("statusCode") == 200:
                request_id = envelope.get("requestId")
                ok = Answer(
                    _SUCCESS,
                    "ok",
                    200,
                    200,
                    None,
                    None,
                    request_id if isinstance(request_id, str) else None,
                )
                return ok, envelope.get("data")
        answer = classify_response(status, resp_headers, raw)
        if answer.kind is AnswerKind.THROTTLED:
            self.throttled += 1
            self.limiter.on_throttle()
        elif answer.kind is AnswerKind.AUTH and token is not None and self._tokens is not None:
            self._tokens.invalidate(token)
        elif answer.kind is _SUCCESS or answer.kind is AnswerKind.INACTIVE:
            # classify.py reads data.active, which these endpoints never send
            answer = Answer(AnswerKind.TRANSIENT, "answer without the expected data", status)
        return answer, None

    async def _headers(
        self, method: str, path: str, params: Mapping[str, Any]
    ) -> tuple[dict[str, str], str | None]:
        lang = self.authing.lang
        if self._tokens is not None:
            token = await self._tokens.get()
            headers = bearer_headers(token, lang)
            return headers, token.access_token
        headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "x-authing-signature-nonce": new_nonce(),
            "x-authing-signature-method": SIGNATURE_METHOD,
            "x-authing-signature-version": SIGNATURE_VERSION,
            "x-authing-sdk-version": SDK_VERSION,
            "x-authing-lang": lang,
            "date": http_date(self._clock()),
        }
        message = string_to_sign(method, path, headers, params)
        headers["authorization"] = authorization(self._key_id, self._secret, message)
        return headers, None


def _page_parts(data: Any, path: str) -> tuple[int, list[dict[str, Any]]]:
    """(totalCount, list) of a paged answer; ApiError for any other shape."""
    if isinstance(data, dict):
        total, items = data.get("totalCount"), data.get("list")
        if type(total) is int and isinstance(items, list):
            return total, [item for item in items if isinstance(item, dict)]
    raise ApiError(f"{path}: the answer is not a page ({{totalCount, list}})")
