"""`[[policy]]` blocks: expected states for pairs matched by app and user patterns.

How a pair's effective expectation is chosen (specificity) is audit_job/policy.py's job;
this module only validates what the file says.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)

PATTERN_LENGTH = 255  # an id is at most 255 characters, so a longer pattern matches nothing


def _patterns(value: str | list[str] | None) -> str | list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not items:
        raise ValueError("must name at least one pattern (leave the key out to match all)")
    for item in items:
        if not item:
            raise ValueError("a pattern must not be empty")
        if len(item) > PATTERN_LENGTH:
            raise ValueError(f"a pattern must be at most {PATTERN_LENGTH} characters")
        if any(unicodedata.category(char) == "Cc" for char in item):
            raise ValueError("a pattern must not contain control characters")
    return value


class PolicySettings(BaseModel):
    """One `[[policy]]` block."""

    model_config = STRICT
    name: str | None = Field(None, min_length=1, max_length=64)
    apps: str | list[str] | None = None
    users: str | list[str] | None = None
    expect: Literal["any", "active", "inactive"]
    severity: Literal["info", "warning", "critical"] = "warning"

    @field_validator("apps", "users")
    @classmethod
    def _valid_patterns(cls, value: str | list[str] | None) -> str | list[str] | None:
        return _patterns(value)

    @property
    def app_patterns(self) -> tuple[str, ...]:
        return _as_tuple(self.apps)

    @property
    def user_patterns(self) -> tuple[str, ...]:
        return _as_tuple(self.users)


def _as_tuple(value: str | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)
