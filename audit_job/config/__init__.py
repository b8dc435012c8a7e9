"""Configuration: one TOML file, environment overrides, strict validation.

Lookup order: `--config PATH`, else `$AUDIT_JOB_CONFIG`, else `./audit-job.toml` when it
exists, else built-in defaults (embedded SQLite `./audit.db`). Environment variables
override the file: `AUDIT_JOB_DATABASE_URL`, `AUTHING_ACCESS_KEY_ID`,
`AUTHING_ACCESS_KEY_SECRET`. Every problem becomes one line naming file, key and value.

The sections' models live in settings.py, the problem messages in messages.py; this module
loads the file and is what the rest of the tool imports.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from audit_job.config.messages import describe, mask_url
from audit_job.config.policies import PolicySettings
from audit_job.config.settings import (
    DEFAULT_DATABASE_URL,
    AuditSettings,
    AuthingSettings,
    DaemonSettings,
    DatabaseSettings,
    EvidenceSettings,
    RetentionSettings,
    ScheduleSettings,
    Settings,
    SourceSettings,
    normalize_database_url,
)
from audit_job.config.sinks import (
    EventsSettings,
    JsonlSinkSettings,
    SinkSettings,
    WebhookSinkSettings,
    mask_webhook_url,
)
from audit_job.errors import ConfigError

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_FILE",
    "ENV_CONFIG",
    "ENV_OVERRIDES",
    "AuditSettings",
    "AuthingSettings",
    "DaemonSettings",
    "DatabaseSettings",
    "EventsSettings",
    "EvidenceSettings",
    "JsonlSinkSettings",
    "LoadedConfig",
    "PolicySettings",
    "RetentionSettings",
    "ScheduleSettings",
    "Settings",
    "SinkSettings",
    "SourceSettings",
    "WebhookSinkSettings",
    "load",
    "masked",
    "normalize_database_url",
    "resolve_path",
]

DEFAULT_FILE = "audit-job.toml"
ENV_CONFIG = "AUDIT_JOB_CONFIG"
ENV_OVERRIDES = {
    "AUDIT_JOB_DATABASE_URL": ("database", "url"),
    "AUTHING_ACCESS_KEY_ID": ("authing", "access_key_id"),
    "AUTHING_ACCESS_KEY_SECRET": ("authing", "access_key_secret"),
}


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
        # dict.fromkeys: a value failing both sides of `str | list[str]` is one problem
        lines = dict.fromkeys(describe(origin, text, err) for err in exc.errors())
        raise ConfigError("\n".join(lines)) from None
    if not settings.authing.verify_tls:
        warnings.append(
            f"{origin}: [authing] verify_tls = false: TLS certificates are NOT verified; "
            "anyone on the path can read the credentials"
        )
    for number, sink in enumerate(settings.sink, start=1):
        if isinstance(sink, WebhookSinkSettings) and not sink.verify_tls:
            warnings.append(
                f"{origin}: [[sink]] #{number} ({sink.name}) verify_tls = false: the webhook's "
                "TLS certificate is NOT verified"
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


def masked(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, secrets replaced by `********`."""
    data = settings.model_dump(mode="json")
    authing = data["authing"]
    if settings.authing.access_key_secret is not None:
        authing["access_key_secret"] = "********"
    data["database"]["url"] = mask_url(data["database"]["url"])
    if data["source"]["url"]:
        data["source"]["url"] = mask_url(data["source"]["url"])
    for sink in data["sink"]:
        if sink.get("url"):
            sink["url"] = mask_webhook_url(sink["url"])
    return data
