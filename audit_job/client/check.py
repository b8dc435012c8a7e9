"""The request path of AuthingClient: send check-session-status, time it, classify, retry.

Policy for one pair (spec 6, 7): every attempt passes the in-flight gate and the global rate
limiter and tells them its answer (pacing.py); retryable answers are retried up to
`max_attempts` in all, waiting Retry-After or full-jitter backoff (retry.py); in token mode
an auth answer drops the token, and the next attempt (made at once, still counted) carries a
fresh one. Final answers become a
`CheckResult`; a pair still failing after its attempts is an error result, not an exception.

Run-level guards raise instead, for every in-flight and later `check`:
- `AuthRejected` after K auth answers in a row (`[authing] auth_failure_limit`). Only server
  answers move the streak: a timeout or reset says nothing about credentials, so it neither
  counts nor resets it. In token mode an auth answer made with a token someone already
  replaced is not counted either (100 requests failing with one expired token are 1 failure).
- `TlsRejected` on the first certificate rejection.

Hot path (thousands of checks a second on one core): the first attempt runs without tenacity,
which is entered only when that answer is retryable; nothing is logged per request; the body
is built once per pair; the time limit of an attempt is watched by one task for all of them
(deadlines.py) rather than by aiohttp's timers; no cookie jar (the API sets none).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any, NoReturn

import aiohttp
import yarl

from audit_job.client.exchange import exchange
from audit_job.client.headers import SDK_VERSION, bearer_headers
from audit_job.client.pacing import RequestPacing
from audit_job.client.rejection import auth_rejection, tls_rejection
from audit_job.client.result import final_result
from audit_job.client.session import new_session
from audit_job.client.stats import ClientStats
from audit_job.config import AuditSettings, AuthingSettings, LoadedConfig
from audit_job.deadlines import DeadlineWatch
from audit_job.errors import ApiError, AuthRejected
from audit_job.limiter import AdaptiveRateLimiter
from audit_job.models import Answer, AnswerKind, CheckResult, CheckStatus, Pair
from audit_job.retry import (
    DEFAULT_BACKOFF_BASE_SECONDS,
    DEFAULT_BACKOFF_CAP_SECONDS,
    backoff_seconds,
    build_retrying,
)
from audit_job.signing import CHECK_SESSION_PATH, Signer, check_body
from audit_job.token import ManagementToken, TokenProvider

_ACTIVE = AnswerKind.ACTIVE
_INACTIVE = AnswerKind.INACTIVE
_PERMANENT = AnswerKind.PERMANENT
_THROTTLED = AnswerKind.THROTTLED
_AUTH = AnswerKind.AUTH
_FATAL = AnswerKind.FATAL


class _Attempts:
    """Bookkeeping for one pair on the retry path (the first attempt needs none)."""

    __slots__ = ("count", "latency_seconds", "refreshed", "throttled")

    def __init__(self, throttled: int, latency_seconds: float, refreshed: bool) -> None:
        self.count = 1
        self.throttled = throttled
        self.latency_seconds = latency_seconds
        self.refreshed = refreshed


class AuthingClient:
    """`async with AuthingClient(...) as client: result = await client.check(pair)`."""

    def __init__(
        self,
        authing: AuthingSettings,
        *,
        access_key_id: str,
        access_key_secret: str,
        limiter: AdaptiveRateLimiter,
        concurrency: int | None = 16,
        max_concurrency: int = 256,
        max_attempts: int = 5,
        stats: ClientStats | None = None,
        backoff_base_seconds: float = DEFAULT_BACKOFF_BASE_SECONDS,
        backoff_cap_seconds: float = DEFAULT_BACKOFF_CAP_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (concurrency is not None and concurrency < 1) or max_concurrency < 1:
            raise ValueError("concurrency and max_concurrency must be >= 1")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.authing = authing
        self.host = authing.host.rstrip("/")
        self.url = yarl.URL(self.host + CHECK_SESSION_PATH)  # parsed once, not per request
        self.limiter = limiter
        self.stats = stats if stats is not None else ClientStats()
        # concurrency None: the in-flight limit adapts (concurrency.py) up to max_concurrency.
        self.pacing = RequestPacing.for_limits(limiter, concurrency, max_concurrency)
        # The pool is sized to the most that may be in flight; the gate bounds its use (a
        # connection is opened only when a request needs one, and idle ones expire).
        self.pool_size = max_concurrency if concurrency is None else concurrency
        self.max_attempts = max_attempts
        self._key_id = access_key_id
        self._secret = access_key_secret
        self._backoff_base = backoff_base_seconds
        self._backoff_cap = backoff_cap_seconds
        self._clock = clock
        self._auth_limit = authing.auth_failure_limit
        self._auth_streak = 0
        self._failure: ApiError | None = None
        self._stop = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._deadlines = DeadlineWatch(authing.timeout_seconds)
        self._signer: Signer | None = None
        self._tokens: TokenProvider | None = None
        self._token_headers: tuple[ManagementToken | None, dict[str, str]] = (None, {})

    @classmethod
    def from_config(
        cls,
        config: LoadedConfig,
        *,
        limiter: AdaptiveRateLimiter | None = None,
        stats: ClientStats | None = None,
    ) -> AuthingClient:
        """A client for the configured host and credentials; a limiter at the configured rate
        unless one is given (pass the run's limiter so token requests share it)."""
        key_id, secret = config.require_credentials()
        audit: AuditSettings = config.settings.audit
        return cls(
            config.settings.authing,
            access_key_id=key_id,
            access_key_secret=secret,
            limiter=limiter or AdaptiveRateLimiter(audit.rate_per_second),
            concurrency=audit.pinned_concurrency,
            max_concurrency=audit.max_concurrency,
            max_attempts=audit.max_attempts,
            stats=stats,
        )

    def __repr__(self) -> str:
        return f"AuthingClient(host={self.host!r}, auth={self.authing.auth!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> AuthingClient:
        authing = self.authing
        # No aiohttp timeouts: `_deadlines` limits every attempt (connect included).
        self._session = new_session(authing, self.pool_size)
        try:
            self._deadlines.start()
            if authing.auth == "signature":
                self._signer = Signer(
                    self._key_id,
                    self._secret,
                    lang=authing.lang,
                    sdk_version=SDK_VERSION,
                    clock=self._clock,
                )
            else:
                self._tokens = TokenProvider(
                    self._session,
                    self.host,
                    self._key_id,
                    self._secret,
                    limiter=self.limiter,
                    max_attempts=self.max_attempts,
                    backoff_base_seconds=self._backoff_base,
                    backoff_cap_seconds=self._backoff_cap,
                    clock=self._clock,
                    on_request=self.stats.count_token_request,
                    timeout_seconds=authing.timeout_seconds,
                )
                # Spec 5: bad credentials fail the run before any pair is touched.
                await self._tokens.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._deadlines.aclose()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @property
    def failure(self) -> ApiError | None:
        """The run-level failure that stopped this client, if any."""
        return self._failure

    # -- one pair ----------------------------------------------------------------------------

    async def check(self, pair: Pair) -> CheckResult:
        """The final result for `pair`; raises AuthRejected/TlsRejected when the run must stop."""
        if self._failure is not None:
            raise self._failure
        body = check_body(pair.app_id, pair.user_id)
        answer, latency, token = await self._attempt(pair, body)
        kind = answer.kind
        if kind is _ACTIVE or kind is _INACTIVE or kind is _PERMANENT:
            return final_result(answer, 1, latency, 0)
        return await self._retry(pair, body, answer, latency, token)

    async def check_once(self, pair: Pair) -> tuple[Answer, dict[str, Any] | None, float]:
        """One attempt, no retries: the answer, the envelope as received (or None when the
        body is not a JSON object) and the latency in ms. Run-level guards apply."""
        if self._failure is not None:
            raise self._failure
        captured: list[bytes] = []
        answer, latency, _ = await self._attempt(
            pair, check_body(pair.app_id, pair.user_id), captured
        )
        envelope: dict[str, Any] | None = None
        if captured:
            try:
                parsed = json.loads(captured[0])
            except ValueError:
                parsed = None
            envelope = parsed if isinstance(parsed, dict) else None
        return answer, envelope, latency * 1000.0

    async def _retry(
        self, pair: Pair, body: bytes, answer: Answer, latency: float, token: str | None
    ) -> CheckResult:
        state = _Attempts(int(answer.kind is _THROTTLED), latency, False)
        answer = self._maybe_refresh(answer, token, state)
        if self.max_attempts > 1:
            first_wait = answer.retry_after_seconds
            if first_wait is None:
                first_wait = backoff_seconds(1, base=self._backoff_base, cap=self._backoff_cap)
            await self._pause(first_wait)
            # Attempt 1 ran outside tenacity, so its attempt n is our n + 1: doubling the
            # base keeps the backoff curve of spec 7 (base * 2 ** (attempt - 1)).
            retrying = build_retrying(
                self.max_attempts - 1,
                sleep=self._pause,
                base=min(self._backoff_base * 2, self._backoff_cap),
                cap=self._backoff_cap,
            )
            answer = await retrying(self._retry_attempt, pair, body, state)
        if answer.kind.is_final:
            return final_result(answer, state.count, state.latency_seconds, state.throttled)
        return final_result(
            answer, state.count, state.latency_seconds, state.throttled, CheckStatus.ERROR
        )

    async def _retry_attempt(self, pair: Pair, body: bytes, state: _Attempts) -> Answer:
        self.stats.retries += 1
        answer, latency, token = await self._attempt(pair, body)
        state.count += 1
        state.latency_seconds = latency
        if answer.kind is _THROTTLED:
            state.throttled += 1
        return self._maybe_refresh(answer, token, state)

    def _maybe_refresh(self, answer: Answer, token: str | None, state: _Attempts) -> Answer:
        """Token mode, spec 5: after an auth answer the next attempt goes out at once, with
        the token `_attempt` already dropped replaced by a fresh one. Once per pair."""
        if answer.kind is _AUTH and token is not None and not state.refreshed:
            state.refreshed = True
            return dataclasses.replace(answer, retry_after_seconds=0.0)
        return answer

    async def _pause(self, seconds: float) -> None:
        """Sleep between attempts, cut short when the run is stopped meanwhile."""
        if seconds > 0:
            try:
                await asyncio.wait_for(self._stop.wait(), seconds)
            except TimeoutError:
                pass
        if self._failure is not None:
            raise self._failure

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(
        self, pair: Pair, body: bytes, capture: list[bytes] | None = None
    ) -> tuple[Answer, float, str | None]:
        """Send once and classify: (answer, latency seconds, bearer token used or None)."""
        pacing = self.pacing
        slot_at = pacing.try_enter()
        if slot_at is None:
            slot_at = await pacing.enter()
        sent_at = pacing.now()
        paced = False  # the gate slot is given back exactly once, whatever happens
        try:
            if self._failure is not None:
                raise self._failure
            session = self._session
            if session is None:
                raise RuntimeError("AuthingClient used outside `async with`")
            token: str | None = None
            signer = self._signer
            if signer is not None:
                headers = signer.headers_for_check(pair.app_id, pair.user_id)
            else:
                headers, token = await self._bearer_headers()
            answer, latency = await exchange(
                session,
                self.url,
                pair,
                body,
                headers,
                self._deadlines,
                self.stats,
                self.pacing,
                sent_at,
                capture,
                slot_at,
            )
            paced = True
        finally:
            if not paced:
                pacing.no_answer()
        return self._after(answer, latency, token)

    def _after(
        self, answer: Answer, latency: float, token: str | None
    ) -> tuple[Answer, float, str | None]:
        """Count the attempt, move the run-level guards, raise when the run must stop."""
        stats = self.stats
        stats.latency_samples.append(latency)
        if stats.observe_latency is not None:
            stats.observe_latency(latency)
        kind = answer.kind
        stats.answers[kind] += 1
        if kind is _AUTH:
            self._on_auth(answer, token)
        elif answer.http_status is not None:
            self._auth_streak = 0
            if kind is _THROTTLED:
                stats.throttled += 1
        elif kind is _FATAL:
            self._stop_run(tls_rejection(self.host, answer))
        if self._failure is not None:  # stopped while this request was in flight
            raise self._failure
        return answer, latency, token

    async def _bearer_headers(self) -> tuple[dict[str, str], str]:
        tokens = self._tokens
        assert tokens is not None
        current = tokens.fresh()
        if current is None:
            try:
                current = await tokens.get()
            except ApiError as exc:  # spec 5: a refused or failing token fetch ends the run
                self._stop_run(exc)
        cached_for, headers = self._token_headers
        if cached_for is not current:  # built once per token, not per request
            headers = bearer_headers(current, self.authing.lang)
            self._token_headers = (current, headers)
        return headers, current.access_token

    def _on_auth(self, answer: Answer, token: str | None) -> None:
        self.stats.auth_failures += 1
        # Token mode: only the first failure with a given token counts; the others were
        # made with a token that is already being replaced.
        if token is not None and self._tokens is not None and not self._tokens.invalidate(token):
            return
        self._auth_streak += 1
        if self._auth_streak >= self._auth_limit:
            self._stop_run(self.auth_rejection(answer, self._auth_streak))

    def auth_rejection(self, answer: Answer, times: int = 1) -> AuthRejected:
        """The error for an auth-class answer: codes, server message, clock skew (spec 6)."""
        # Only signed requests carry the local date, so only they get the clock-skew hint.
        clock = self._clock if self._signer is not None else None
        return auth_rejection(answer, times, host=self.host, auth=self.authing.auth, clock=clock)

    def _stop_run(self, failure: ApiError) -> NoReturn:
        if self._failure is None:
            self._failure = failure
            self._stop.set()
        raise self._failure
