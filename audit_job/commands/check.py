"""`check APP USER`: one live attempt, no retries, for trying credentials and a host by hand.

Returns data and never prints. A run-level problem (credentials rejected, TLS refused) is
returned as `failure` beside the answer, so the caller can still show what the server said
before it reports the failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audit_job.client import AuthingClient
from audit_job.config import LoadedConfig
from audit_job.errors import EXIT_FATAL, EXIT_ITEM_ERRORS, EXIT_OK, ApiError, ConfigError
from audit_job.limiter import AdaptiveRateLimiter
from audit_job.models import Answer, AnswerKind, CheckStatus, Pair


@dataclass(frozen=True, slots=True)
class OneCheck:
    pair: Pair
    host: str
    auth: str
    answer: Answer
    envelope: dict[str, Any] | None
    latency_ms: float
    failure: ApiError | None = None

    @property
    def status(self) -> CheckStatus:
        kind = self.answer.kind
        if kind is AnswerKind.ACTIVE:
            return CheckStatus.ACTIVE
        if kind is AnswerKind.INACTIVE:
            return CheckStatus.INACTIVE
        return CheckStatus.ERROR

    @property
    def exit_code(self) -> int:
        """0 for an answer, 3 for a per-pair error, 1 when the run as such would fail."""
        if self.failure is not None:
            return EXIT_FATAL
        return EXIT_OK if self.status is not CheckStatus.ERROR else EXIT_ITEM_ERRORS

    def as_row(self) -> dict[str, Any]:
        answer = self.answer
        return {
            "app_id": self.pair.app_id,
            "user_id": self.pair.user_id,
            "status": self.status.value,
            "active": answer.active,
            "class": answer.kind.value,
            "detail": answer.detail,
            "http_status": answer.http_status,
            "status_code": answer.status_code,
            "api_code": answer.api_code,
            "message": answer.message,
            "request_id": answer.request_id,
            "latency_ms": round(self.latency_ms, 1),
            "host": self.host,
            "auth": self.auth,
        }


async def check_pair(config: LoadedConfig, app_id: str, user_id: str) -> OneCheck:
    """One attempt for (app_id, user_id) with the configured host, auth mode and TLS."""
    for name, value in (("APP", app_id), ("USER", user_id)):
        if not value.strip():
            raise ConfigError(f"check: {name}: must be a non-empty id, got {value!r}")
    settings = config.settings
    pair = Pair(app_id, user_id)
    limiter = AdaptiveRateLimiter(settings.audit.rate_per_second)
    async with AuthingClient.from_config(config, limiter=limiter) as client:
        answer, envelope, latency_ms = await client.check_once(pair)
        failure = None
        if answer.kind is AnswerKind.AUTH:
            failure = client.auth_rejection(answer)
    return OneCheck(
        pair=pair,
        host=client.host,
        auth=settings.authing.auth,
        answer=answer,
        envelope=envelope,
        latency_ms=latency_ms,
        failure=failure,
    )
