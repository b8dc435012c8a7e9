"""`[[sink]]` blocks (where the event feed goes) and `[events]` (the feed itself).

A webhook URL may carry a secret (user info, a token in the query): every message and
`config show` shows it masked (`mask_webhook_url`). The signing secret itself is never in
the file, only the name of the environment variable that holds it (`secret_env`); it is
read when a command delivers (audit_job/events/signing.py).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from audit_job.models import EventType

STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)
EVENT_TYPES = tuple(t.value for t in EventType)
SINK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MASK = "********"


def mask_webhook_url(url: str) -> str:
    """The URL without what may be a secret: user info and query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparseable URL)"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{item.partition('=')[0]}={MASK}" if "=" in item else MASK
        for item in parts.query.split("&")
        if item
    )
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    if query:
        shown += f"?{query}"
    if parts.fragment:
        shown += f"#{MASK}"
    return shown


def url_secrets(url: str) -> list[str]:
    """The parts of a URL that `mask_webhook_url` hides, to keep out of any text."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        found += [userinfo, *userinfo.split(":")]
    for item in parts.query.split("&"):
        value = item.partition("=")[2] if "=" in item else item
        if value:
            found.append(value)
    if parts.fragment:
        found.append(parts.fragment)
    return [secret for secret in found if secret]


def resolve_types(patterns: list[str]) -> frozenset[str]:
    """The event types a `types` filter lets through (each entry a type or a glob)."""
    return frozenset(t for t in EVENT_TYPES if any(fnmatch.fnmatchcase(t, p) for p in patterns))


class _SinkBase(BaseModel):
    model_config = STRICT
    name: str
    types: list[str] = ["*"]

    @field_validator("name")
    @classmethod
    def _good_name(cls, value: str) -> str:
        if not SINK_NAME.match(value):
            raise ValueError(
                "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
            )
        return value

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError('must name at least one event type or glob (all: ["*"])')
        for pattern in value:
            if not resolve_types([pattern]):
                raise ValueError(
                    f"{pattern!r} matches no event type (known: {', '.join(EVENT_TYPES)})"
                )
        return value

    @property
    def event_types(self) -> frozenset[str]:
        return resolve_types(self.types)


class WebhookSinkSettings(_SinkBase):
    type: Literal["webhook"]
    url: str
    secret_env: str
    batch_size: int = Field(100, ge=1, le=1000)
    timeout_seconds: float = Field(15, gt=0, le=300)
    max_attempts: int = Field(8, ge=1, le=1000)
    verify_tls: bool = True
    ca_bundle: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        problem = "must be an http:// or https:// URL naming a host"
        try:
            parts = urlsplit(value)
            port = parts.port  # raises ValueError for a port out of range or not a number
        except ValueError:
            raise ValueError(problem) from None
        if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
            raise ValueError(problem)
        if any(char.isspace() for char in value):
            raise ValueError(problem + " (no spaces)")
        return value

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if value.startswith("whsec_") or not ENV_NAME.match(value):
            raise ValueError(
                "must be the name of an environment variable (letters, digits, '_'), "
                "not the secret itself"
            )
        return value


class JsonlSinkSettings(_SinkBase):
    type: Literal["jsonl"]
    path: str = Field(min_length=1)
    batch_size: int = Field(1000, ge=1, le=100_000)


SinkSettings = Annotated[WebhookSinkSettings | JsonlSinkSettings, Field(discriminator="type")]


class EventsSettings(BaseModel):
    model_config = STRICT
    keep_days: int = Field(30, ge=1, le=36500)
    poll_seconds: float = Field(1, gt=0, le=60)
    lease_seconds: float = Field(30, ge=2, le=3600)
    # `audit-job run`: how long it goes on delivering after its last answer (0: not at all).
    drain_seconds: float = Field(30, ge=0, le=3600)
