"""`[discovery]` (which pairs `targets discover|sync` take from Authing) and `[remediation]`
(the guard of `audit-job kick`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)
# list-users' `status` values (authing-api-more.md 1d, legacy GET).
USER_STATUSES = ("Activated", "Suspended", "Deactivated", "Resigned", "Archived")


def check_status(value: str | None) -> str | None:
    """A user status Authing knows, or ValueError naming the known ones."""
    if value is not None and value not in USER_STATUSES:
        raise ValueError(f"must be one of {', '.join(USER_STATUSES)} (got {value!r})")
    return value


class DiscoverySettings(BaseModel):
    model_config = STRICT
    apps: list[str] = Field(default_factory=lambda: ["*"], min_length=1)  # globs over appId
    status: str | None = None
    logged_in: bool = False
    sync_before_run: bool = False  # the daemon runs `targets sync` before each run

    @field_validator("apps")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        for number, glob in enumerate(value, start=1):
            if not glob.strip():
                raise ValueError(f"entry {number} is empty; give an app id or a glob like 'app-*'")
        return value

    @field_validator("status")
    @classmethod
    def _known_status(cls, value: str | None) -> str | None:
        return check_status(value)


class RemediationSettings(BaseModel):
    model_config = STRICT
    max_users: int = Field(50, ge=1, le=1_000_000)  # a plan above it needs --max-users N
    auto: bool = False  # the daemon kicks open `expect = inactive` violations after each run
