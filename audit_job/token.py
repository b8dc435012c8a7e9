"""Management token for auth mode `token` (spec sections 4 and 5).

One `TokenProvider` per run. It fetches the token when the run starts, so bad credentials
fail before any pair is touched, and keeps it until less than max(60 s, 10 % of its
lifetime) remains. Exactly one fetch is in flight at a time: 100 callers that find the
token due share one request. A caller whose request was answered with an auth-class
answer calls `invalidate(token)`; only the first such call for a given token drops it.

Neither the secret nor the token ever goes into a log line, an exception or a repr.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from audit_job.errors import ApiError, AuthRejected, TlsRejected

TOKEN_PATH = "/api/v3/get-management-token"
DEFAULT_LIFETIME_SECONDS = 300.0  # spec 5: when neither expires_in nor the JWT exp is usable
MIN_REFRESH_MARGIN_SECONDS = 60.0
REFRESH_MARGIN_SHARE = 0.10
_MESSAGE_LIMIT = 200


class Limiter(Protocol):
    async def acquire(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ManagementToken:
    """A fetched token. `repr` hides the token itself."""

    access_token: str
    userpool_id: str | None
    received_at: float
    expires_at: float

    @property
    def lifetime_seconds(self) -> float:
        return self.expires_at - self.received_at

    @property
    def refresh_at(self) -> float:
        """When to fetch the next one (spec 5). The margin never exceeds half the lifetime,
        so a token issued for less than two minutes is still used before it is replaced."""
        lifetime = self.lifetime_seconds
        margin = max(MIN_REFRESH_MARGIN_SECONDS, REFRESH_MARGIN_SHARE * lifetime)
        return self.expires_at - min(margin, lifetime / 2)

    def __repr__(self) -> str:
        return (
            f"ManagementToken(userpool_id={self.userpool_id!r}, "
            f"received_at={self.received_at}, expires_at={self.expires_at})"
        )


class _Retryable(Exception):
    """A token fetch worth repeating (transport error, 5xx, 429, apiCode 1000, malformed)."""

    def __init__(self, detail: str, retry_after_seconds: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after_seconds = retry_after_seconds


def _number(value: Any) -> float | None:
    """JSON numbers or numeric strings (spec 6); anything else is absent."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def jwt_claims(token: str) -> dict[str, Any]:
    """The JWT payload, decoded and NOT verified (spec 4.3); {} when it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def token_expiry(received_at: float, expires_in: Any, jwt_exp: Any) -> float:
    """receipt + expires_in, or the JWT exp if earlier; receipt + 300 s if neither is usable.

    An `exp` at or before the receipt is ignored: it means the local clock and the issuer
    disagree, and trusting it would make every call fetch a new token.
    """
    candidates = []
    lifetime = _number(expires_in)
    if lifetime is not None and lifetime > 0:
        candidates.append(received_at + lifetime)
    exp = _number(jwt_exp)
    if exp is not None and exp > received_at:
        candidates.append(exp)
    return min(candidates) if candidates else received_at + DEFAULT_LIFETIME_SECONDS


class TokenProvider:
    """Caches the management token and refreshes it, one fetch at a time."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        host: str,
        access_key_id: str,
        access_key_secret: str,
        *,
        limiter: Limiter | None = None,
        ssl_context: ssl.SSLContext | bool | None = None,
        max_attempts: int = 5,
        backoff_base_seconds: float = 0.5,
        backoff_cap_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        on_request: Callable[[], None] | None = None,
        timeout_seconds: float | None = None,
    ) -> None:
        self._session = session
        self._timeout_seconds = timeout_seconds  # the session's own timeouts are off
        self._host = host.rstrip("/")
        self._url = self._host + TOKEN_PATH
        # Serialised once; the secret lives only in these bytes and is never formatted.
        self._body = json.dumps(
            {"accessKeyId": access_key_id, "accessKeySecret": access_key_secret},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        self._secret = access_key_secret
        self._limiter = limiter
        self._ssl = ssl_context if ssl_context is not None else True
        self._max_attempts = max(1, max_attempts)
        self._backoff_base = backoff_base_seconds
        self._backoff_cap = backoff_cap_seconds
        self._clock = clock
        self._sleep = sleep
        self._on_request = on_request
        self._current: ManagementToken | None = None
        self._inflight: asyncio.Task[ManagementToken] | None = None
        self.fetches = 0  # completed successful fetches
        self.requests = 0  # HTTP requests sent to the token endpoint

    def __repr__(self) -> str:
        return f"TokenProvider(host={self._host!r})"

    @property
    def current(self) -> ManagementToken | None:
        return self._current

    def fresh(self) -> ManagementToken | None:
        """The current token when it is not due for refresh, without awaiting (hot path)."""
        current = self._current
        if current is not None and self._clock() < current.refresh_at:
            return current
        return None

    async def start(self) -> ManagementToken:
        """Fetch the first token now, so bad credentials fail the run before any pair."""
        return await self.get()

    async def get(self) -> ManagementToken:
        """A token that is not due for refresh; fetches (single-flight) when needed."""
        current = self._current
        if current is not None and self._clock() < current.refresh_at:
            return current
        task = self._inflight
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch())
            self._inflight = task
            task.add_done_callback(self._fetch_done)
        # Shielded: one caller being cancelled must not cancel the fetch the others await.
        return await asyncio.shield(task)

    def invalidate(self, token: str) -> bool:
        """Drop `token` if it is still the current one; True when this call dropped it.

        Many requests made with the same token can fail together; only the first
        invalidation counts, the rest see a newer token (or the fetch in flight).
        """
        current = self._current
        if current is not None and current.access_token == token:
            self._current = None
            return True
        return False

    def _fetch_done(self, task: asyncio.Task[ManagementToken]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved here, so a fetch nobody awaits any more stays quiet

    async def _fetch(self) -> ManagementToken:
        last = "no attempt made"
        for attempt in range(1, self._max_attempts + 1):
            try:
                token = await self._fetch_once()
            except _Retryable as exc:
                last = str(exc)
                if attempt == self._max_attempts:
                    break
                delay = random.uniform(
                    0, min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
                )
                if exc.retry_after_seconds is not None:
                    delay = max(delay, min(exc.retry_after_seconds, 60.0))
                await self._sleep(delay)
                continue
            self._current = token
            self.fetches += 1
            return token
        raise ApiError(
            f"{self._url}: could not get a management token after "
            f"{self._max_attempts} attempts; last: {last}"
        )

    async def _fetch_once(self) -> ManagementToken:
        if self._limiter is not None:
            await self._limiter.acquire()
        self.requests += 1
        if self._on_request is not None:
            self._on_request()
        try:
            async with (
                asyncio.timeout(self._timeout_seconds),
                self._session.post(
                    self._url,
                    data=self._body,
                    headers={"content-type": "application/json", "accept": "application/json"},
                    allow_redirects=False,
                    ssl=self._ssl,
                ) as resp,
            ):
                raw = await resp.read()
                http_status = resp.status
                retry_after = resp.headers.get("retry-after")
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TlsRejected(
                f"{self._host}: TLS certificate rejected ({type(exc).__name__}); trust the "
                "issuing CA with [authing] ca_bundle, or (unsafe) set [authing] verify_tls = false"
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _Retryable(f"transport error: {type(exc).__name__}") from None
        return self._interpret(http_status, raw, retry_after)

    def _interpret(self, http_status: int, raw: bytes, retry_after: str | None) -> ManagementToken:
        received_at = self._clock()
        try:
            envelope = json.loads(raw)
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict):
            envelope = {}
        status_code = _number(envelope.get("statusCode"))
        api_code = _number(envelope.get("apiCode"))
        message = self._clean(envelope.get("message"))
        what = f"HTTP {http_status}"
        if status_code is not None:
            what += f", statusCode {int(status_code)}"
        if api_code is not None:
            what += f", apiCode {int(api_code)}"
        if message:
            what += f": {message}"
        throttled = http_status == 429 or status_code == 429
        if http_status >= 500 or throttled or (status_code or 0) >= 500 or api_code == 1000:
            after = _number(retry_after) if throttled else None
            raise _Retryable(what, after if after is not None and after >= 0 else None)
        if http_status != 200 or (status_code is not None and status_code != 200):
            raise AuthRejected(
                f"{self._url}: management token refused ({what}); check [authing] "
                "access_key_id / access_key_secret and host"
            )
        data = envelope.get("data")
        access_token = data.get("access_token") if isinstance(data, dict) else None
        if status_code is None or not isinstance(access_token, str) or not access_token:
            raise _Retryable(f"{what}: malformed token answer")
        claims = jwt_claims(access_token)
        pool = claims.get("scoped_userpool_id")
        return ManagementToken(
            access_token=access_token,
            userpool_id=pool if isinstance(pool, str) and pool else None,
            received_at=received_at,
            expires_at=token_expiry(received_at, data.get("expires_in"), claims.get("exp")),
        )

    def _clean(self, message: Any) -> str:
        """Server message for an error line: truncated, and never echoing the secret."""
        if not isinstance(message, str):
            return ""
        if self._secret and self._secret in message:
            message = message.replace(self._secret, "********")
        return message if len(message) <= _MESSAGE_LIMIT else message[:_MESSAGE_LIMIT] + "…"
