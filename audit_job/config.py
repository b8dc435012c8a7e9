"""Configuration: one TOML file, environment overrides, strict validation.

Lookup order: `--config PATH`, else `$AUDIT_JOB_CONFIG`, else `./audit-job.toml` when it
exists, else built-in defaults (embedded SQLite `./audit.db`). Environment variables
override the file: `AUDIT_JOB_DATABASE_URL`, `AUTHING_ACCESS_KEY_ID`,
`AUTHING_ACCESS_KEY_SECRET`. Every problem becomes one line naming file, key and value.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from audit_job.errors import ConfigError

DEFAULT_FILE = "audit-job.toml"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./audit.db"
ENV_CONFIG = "AUDIT_JOB_CONFIG"
ENV_OVERRIDES = {
    "AUDIT_JOB_DATABASE_URL": ("database", "url"),
    "AUTHING_ACCESS_KEY_ID": ("authing", "access_key_id"),
    "AUTHING_ACCESS_KEY_SECRET": ("authing", "access_key_secret"),
}
_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)


def normalize_database_url(url: str) -> str:
    """Accept the URLs people paste and pick the async driver we ship."""
    for plain, driver in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


class DatabaseSettings(BaseModel):
    model_config = _STRICT
    url: str = DEFAULT_DATABASE_URL
    connect_timeout_seconds: float = Field(10, gt=0, le=300)
    write_retry_seconds: float = Field(60, ge=0, le=86400)

    @field_validator("url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        value = normalize_database_url(value.strip())
        if not re.match(r"^(sqlite\+aiosqlite|postgresql\+asyncpg|mysql\+\w+)://", value):
            raise ValueError(
                "must be a database URL such as sqlite+aiosqlite:///./audit.db "
                "or postgresql+asyncpg://user@host/db"
            )
        return value


class AuthingSettings(BaseModel):
    model_config = _STRICT
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


class AuditSettings(BaseModel):
    model_config = _STRICT
    concurrency: int = Field(16, ge=1, le=4096)
    rate_per_second: float = Field(20, gt=0, le=1_000_000)
    max_attempts: int = Field(5, ge=1, le=100)
    batch_size: int = Field(500, ge=1, le=100_000)
    heartbeat_seconds: float = Field(5, gt=0, le=3600)
    dead_after_seconds: float = Field(30, gt=0, le=86400)
    stall_timeout_seconds: float = Field(600, gt=0, le=86400)

    @model_validator(mode="after")
    def _dead_after_heartbeat(self) -> AuditSettings:
        if self.dead_after_seconds < 2 * self.heartbeat_seconds:
            raise ValueError("dead_after_seconds must be at least twice heartbeat_seconds")
        return self


class SourceSettings(BaseModel):
    model_config = _STRICT
    url: str | None = None
    query: str | None = None

    @field_validator("url")
    @classmethod
    def _async_url(cls, value: str | None) -> str | None:
        return None if value is None else normalize_database_url(value.strip())


class ScheduleSettings(BaseModel):
    model_config = _STRICT
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
    model_config = _STRICT
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
    model_config = _STRICT
    keep_days: Annotated[int, Field(ge=1)] | None = None


class Settings(BaseModel):
    model_config = _STRICT
    database: DatabaseSettings = DatabaseSettings()
    authing: AuthingSettings = AuthingSettings()
    audit: AuditSettings = AuditSettings()
    source: SourceSettings = SourceSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    daemon: DaemonSettings = DaemonSettings()
    retention: RetentionSettings = RetentionSettings()


class LoadedConfig:
    """Validated settings plus where they came from (for messages) and load warnings."""

    def __init__(self, settings: Settings, origin: str, warnings: list[str]) -> None:
        self.settings = settings
        self.origin = origin
        self.warnings = warnings

    def require_credentials(self) -> tuple[str, str]:
        """The access key pair, or a ConfigError naming the missing key."""
        authing = self.settings.authing
        for key, env in (
            ("access_key_id", "AUTHING_ACCESS_KEY_ID"),
            ("access_key_secret", "AUTHING_ACCESS_KEY_SECRET"),
        ):
            value = getattr(authing, key)
            if value is None or not (
                value.get_secret_value() if isinstance(value, SecretStr) else value
            ):
                raise ConfigError(
                    f"{self.origin}: [authing] {key}: required (set it here or in ${env})"
                )
        assert authing.access_key_id is not None and authing.access_key_secret is not None
        return authing.access_key_id, authing.access_key_secret.get_secret_value()


def resolve_path(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit)
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    default = Path(DEFAULT_FILE)
    return default if default.exists() else None


def load(explicit: str | None = None, env: Mapping[str, str] | None = None) -> LoadedConfig:
    env = os.environ if env is None else env
    path = resolve_path(explicit, env)
    data: dict[str, Any] = {}
    text = ""
    warnings: list[str] = []
    origin = str(path) if path else "built-in defaults"
    if path is not None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such configuration file") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        warnings += _permission_warnings(path, data)
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            section_data = data.setdefault(section, {})
            if isinstance(section_data, dict):
                section_data[key] = env[var]
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe(origin, text, err) for err in exc.errors())) from None
    if not settings.authing.verify_tls:
        warnings.append(
            f"{origin}: [authing] verify_tls = false: TLS certificates are NOT verified; "
            "anyone on the path can read the credentials"
        )
    return LoadedConfig(settings, origin, warnings)


def _permission_warnings(path: Path, data: Mapping[str, Any]) -> list[str]:
    try:
        mode = path.stat().st_mode
    except OSError:
        return []
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        holds_secret = (
            isinstance(data.get("authing"), dict) and "access_key_secret" in data["authing"]
        )
        what = "holds the access key secret and " if holds_secret else ""
        return [
            f"{path}: {what}is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        ]
    return []


def _describe(origin: str, text: str, err: Mapping[str, Any]) -> str:
    loc = [str(part) for part in err["loc"]]
    where = f"[{loc[0]}] {'.'.join(loc[1:])}" if len(loc) > 1 else (loc[0] if loc else "")
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
        what = f"unknown key{hint}" if len(loc) > 1 else f"unknown section{hint}"
    elif kind == "missing":
        what = "required"
    else:
        shown = err.get("input")
        if loc and loc[-1] == "url" and isinstance(shown, str):
            shown = _mask_url(shown)  # a rejected URL may still carry a real password
        if loc and loc[-1] == "access_key_secret":
            # An all-digit secret left unquoted is still the secret. "(value hidden)" also
            # keeps `key: ` out of the line, which log redaction would mask as a secret.
            shown = SecretStr("")
            where += " (value hidden)"
        what = f"{_expectation(loc, err)}, got {_show(shown)}"
    line = _line_of(text, loc)
    suffix = f" (line {line})" if line else ""
    return f"{origin}: {where}: {what}{suffix}"


def _known_keys(section: list[str]) -> list[str]:
    model: type[BaseModel] = Settings
    for name in section:
        annotation = model.model_fields[name].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _expectation(loc: list[str], err: Mapping[str, Any]) -> str:
    """`must be an integer >= 1`, from the field's declared type and bounds."""
    if err["type"] in ("value_error", "assertion_error"):
        return str(err["msg"]).removeprefix("Value error, ")
    field = None
    if len(loc) == 2 and loc[0] in Settings.model_fields:
        section = Settings.model_fields[loc[0]].annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            field = section.model_fields.get(loc[1])
    if field is None:
        return str(err["msg"]).lower()
    text = repr(field.annotation)
    if "Literal" in text:
        choices = re.findall(r"'([^']*)'", text)
        return "must be one of " + ", ".join(f'"{c}"' for c in choices)
    noun = (
        "a boolean (true or false)"
        if "bool" in text
        else "an integer"
        if "int" in text
        else "a number"
        if "float" in text
        else "a string"
    )
    bounds = []
    for meta in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{sign} {getattr(meta, attr)}")
    return f"must be {noun}" + (" " + " and ".join(bounds) if bounds else "")


def _show(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "(secret)"
    try:
        shown = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _line_of(text: str, loc: list[str]) -> int | None:
    """Best-effort line number of `key` inside `[section]` (tomllib keeps no positions)."""
    if not text or not loc:
        return None
    section, key = loc[0], (loc[1] if len(loc) > 1 else None)
    current = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([\w.\-]+)\s*\]", stripped)
        if header:
            current = header.group(1)
            if key is None and current == section:
                return number
            continue
        if current == section and key and re.match(rf"^{re.escape(key)}\s*=", stripped):
            return number
    return None


def masked(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, secrets replaced by `********`."""
    data = settings.model_dump(mode="json")
    authing = data["authing"]
    if settings.authing.access_key_secret is not None:
        authing["access_key_secret"] = "********"
    data["database"]["url"] = _mask_url(data["database"]["url"])
    if data["source"]["url"]:
        data["source"]["url"] = _mask_url(data["source"]["url"])
    return data


def _mask_url(url: str) -> str:
    """Hide a password in a database URL."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1********@", url)
