"""The configuration's sections as pydantic models: types, bounds, defaults, validators.

One model per TOML table; `Settings` is the whole file. Strict: unknown keys and wrong types
are errors (messages.py turns each into one line naming the file, key and value).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from audit_job.config.discovery import DiscoverySettings, RemediationSettings
from audit_job.config.policies import PolicySettings
from audit_job.config.sinks import EventsSettings, SinkSettings

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./audit.db"
STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)


def normalize_database_url(url: str) -> str:
    """Accept the URLs people paste and pick the async driver we ship."""
    for plain, driver in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("mysql://", "mysql+asyncmy://"),
        ("mariadb://", "mariadb+asyncmy://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


class DatabaseSettings(BaseModel):
    model_config = STRICT
    url: str = DEFAULT_DATABASE_URL
    connect_timeout_seconds: float = Field(10, gt=0, le=300)
    write_retry_seconds: float = Field(60, ge=0, le=86400)

    @field_validator("url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        value = normalize_database_url(value.strip())
        if not re.match(r"^(sqlite\+aiosqlite|postgresql\+asyncpg|(mysql|mariadb)\+\w+)://", value):
            raise ValueError(
                "must be a database URL such as sqlite+aiosqlite:///./audit.db, "
                "postgresql+asyncpg://user@host/db or mysql+asyncmy://user@host/db"
            )
        return value


class AuthingSettings(BaseModel):
    model_config = STRICT
    host: str = "https://api.authing.cn"
    access_key_id: str | None = None
    access_key_secret: SecretStr | None = None
    auth: Literal["signature", "token"] = "signature"
    timeout_seconds: float = Field(10, gt=0, le=600)
    verify_tls: bool = True
    ca_bundle: str | None = None
    lang: Literal["zh-CN", "en-US"] = "zh-CN"
    auth_failure_limit: int = Field(3, ge=1, le=1000)

    @field_validator("host")
    @classmethod
    def _has_scheme(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must start with https:// or http:// and name a host")
        return value


MAX_CONCURRENCY_SETTING = 4096


class AuditSettings(BaseModel):
    model_config = STRICT
    # "auto": the in-flight limit follows the rate x the latency (audit_job/concurrency.py),
    # within max_concurrency; an integer pins it.
    concurrency: Literal["auto"] | int = "auto"
    max_concurrency: int = Field(256, ge=1, le=MAX_CONCURRENCY_SETTING)
    rate_per_second: float = Field(20, gt=0, le=1_000_000)
    # Start from the rate learned in earlier runs against the same host and key
    # (store/learned_rate.py), if no older than learned_rate_days.
    use_learned_rate: bool = True
    learned_rate_days: float = Field(7, gt=0, le=3650)
    max_attempts: int = Field(5, ge=1, le=100)
    batch_size: int = Field(500, ge=1, le=100_000)
    heartbeat_seconds: float = Field(5, gt=0, le=3600)
    dead_after_seconds: float = Field(30, gt=0, le=86400)
    stall_timeout_seconds: float = Field(600, gt=0, le=86400)

    @field_validator("concurrency", mode="before")
    @classmethod
    def _auto_or_count(cls, value: object) -> object:
        if value == "auto":
            return value
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and 1 <= value <= MAX_CONCURRENCY_SETTING
        ):
            return value
        raise ValueError(f'must be "auto" or an integer >= 1 and <= {MAX_CONCURRENCY_SETTING}')

    @property
    def adaptive_concurrency(self) -> bool:
        """Whether the in-flight limit adapts (`concurrency = "auto"`)."""
        return self.concurrency == "auto"

    @property
    def pinned_concurrency(self) -> int | None:
        """The pinned in-flight limit, or None when it adapts."""
        return None if isinstance(self.concurrency, str) else self.concurrency

    @property
    def workers(self) -> int:
        """Check tasks a pipeline runs: the most that may ever be in flight."""
        pinned = self.pinned_concurrency
        return self.max_concurrency if pinned is None else pinned

    @model_validator(mode="after")
    def _dead_after_heartbeat(self) -> AuditSettings:
        if self.dead_after_seconds < 2 * self.heartbeat_seconds:
            raise ValueError("dead_after_seconds must be at least twice heartbeat_seconds")
        return self


class SourceSettings(BaseModel):
    model_config = STRICT
    url: str | None = None
    query: str | None = None

    @field_validator("url")
    @classmethod
    def _async_url(cls, value: str | None) -> str | None:
        return None if value is None else normalize_database_url(value.strip())


class ScheduleSettings(BaseModel):
    model_config = STRICT
    cron: str = "0 * * * *"
    interval_seconds: Annotated[float, Field(gt=0, le=31 * 86400)] | None = None
    timezone: str = "UTC"
    misfire_grace_seconds: Annotated[float, Field(gt=0)] | None = None
    catch_up: bool = True
    resume_interrupted: bool = True

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        if len(value.split()) != 5:
            raise ValueError("must be a 5-field crontab expression like '0 * * * *'")
        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"is not a valid crontab expression ({exc})") from None
        return value

    @model_validator(mode="after")
    def _cron_or_interval(self) -> ScheduleSettings:
        if self.interval_seconds is not None and "cron" in self.model_fields_set:
            raise ValueError("set either cron or interval_seconds, not both")
        return self

    @property
    def grace_seconds(self) -> float:
        """Misfire grace: generous by default (half the interval, at least 60 s)."""
        if self.misfire_grace_seconds is not None:
            return self.misfire_grace_seconds
        return max(60.0, (self.interval_seconds or 3600.0) / 2)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except Exception:
            raise ValueError(
                "must be an IANA time zone name such as UTC or Asia/Shanghai"
            ) from None
        return value


class DaemonSettings(BaseModel):
    model_config = STRICT
    listen: str | None = None
    lease_seconds: float = Field(15, ge=2, le=3600)
    node_name: str | None = None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[\w.\-:\[\]]+:\d{1,5}$", value):
            raise ValueError("must be HOST:PORT such as 127.0.0.1:9108")
        return value


class RetentionSettings(BaseModel):
    model_config = STRICT
    keep_days: Annotated[int, Field(ge=1)] | None = None


class EvidenceSettings(BaseModel):
    """Bundles the daemon writes after each scheduled run (commands/evidence.py)."""

    model_config = STRICT
    dir: str | None = None
    keep: Annotated[int, Field(ge=1)] | None = None
    sign_key: str | None = None


class Settings(BaseModel):
    model_config = STRICT
    database: DatabaseSettings = DatabaseSettings()
    authing: AuthingSettings = AuthingSettings()
    audit: AuditSettings = AuditSettings()
    source: SourceSettings = SourceSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    daemon: DaemonSettings = DaemonSettings()
    retention: RetentionSettings = RetentionSettings()
    events: EventsSettings = EventsSettings()
    policy: list[PolicySettings] = []
    sink: list[SinkSettings] = []

    @field_validator("sink")
    @classmethod
    def _unique_names(cls, sinks: list[SinkSettings]) -> list[SinkSettings]:
        seen: dict[str, int] = {}
        for number, sink in enumerate(sinks, start=1):
            if sink.name in seen:
                raise ValueError(
                    f"#{number}: name {sink.name!r} is already used by [[sink]] #{seen[sink.name]}"
                )
            seen[sink.name] = number
        return sinks

    evidence: EvidenceSettings = EvidenceSettings()
    discovery: DiscoverySettings = DiscoverySettings()
    remediation: RemediationSettings = RemediationSettings()
