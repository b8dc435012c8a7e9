"""Rate-limit headers, read cheaply and never trusted blindly. Pure; the clock is a parameter.

Understood, in this order (the first that gives a remaining budget and a reset wins):

- `RateLimit: "default";r=50;t=30` (IETF httpapi draft 08 and later): an item per policy,
  `r` the remaining quota units, `t` seconds until the quota resets. With several items the
  tightest budget (lowest r / t) counts.
- `RateLimit: limit=100, remaining=50, reset=30` (draft 07, a dictionary).
- `RateLimit-Remaining: 50` with `RateLimit-Reset: 30` (drafts 01-06; `RateLimit-Limit` may
  carry a policy list such as `100, 100;w=60`, of which the first number counts).
- `X-RateLimit-Remaining` with `X-RateLimit-Reset` (the common unstandardised pair). The
  reset is delta-seconds in the drafts but a Unix time at many APIs (GitHub, Discord): a
  value above `EPOCH_THRESHOLD` is read as a Unix time and turned into seconds from `now`.

Anything malformed, negative or non-finite reads as absent: no header can stop a run or
raise. Authing is not known to send any of these, so nothing depends on them; the client
calls `read_rate_limit` only when `has_rate_limit_headers` says one is there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

# A reset bigger than this is a Unix time, not a delay (30 years of seconds).
EPOCH_THRESHOLD = 1_000_000_000
# Beyond this a reset says nothing useful for pacing one run.
MAX_RESET_SECONDS = 86_400.0
_MAX_FIELD_CHARS = 512
_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)")
_PARAM = re.compile(r";\s*([a-z][a-z0-9_.*-]*)\s*=\s*(\d+(?:\.\d+)?)")

PRESENCE = ("ratelimit", "ratelimit-remaining", "x-ratelimit-remaining")


@dataclass(frozen=True, slots=True)
class RateLimitHint:
    remaining: float  # requests the quota still allows
    reset_seconds: float  # until the quota is renewed
    limit: float | None = None  # the quota, when stated

    @property
    def rate_per_second(self) -> float:
        """The pace at which the remaining budget lasts until the reset."""
        return self.remaining / self.reset_seconds


def has_rate_limit_headers(headers: Mapping[str, str]) -> bool:
    """The per-response check: is any rate-limit header there at all? (Case-insensitive
    mappings such as aiohttp's answer with no allocation.)"""
    return any(name in headers for name in PRESENCE)


def read_rate_limit(headers: Mapping[str, str], now_epoch: float) -> RateLimitHint | None:
    """The server's remaining budget and time to reset, or None when it states none."""
    combined = headers.get("ratelimit")
    if combined is not None:
        hint = _structured(combined) or _dictionary(combined)
        if hint is not None:
            return hint
    for prefix in ("ratelimit-", "x-ratelimit-"):
        remaining = _first_number(headers.get(prefix + "remaining"))
        reset = _first_number(headers.get(prefix + "reset"))
        if remaining is None or reset is None:
            continue
        if reset > EPOCH_THRESHOLD:
            reset -= now_epoch
        hint = _hint(remaining, reset, _first_number(headers.get(prefix + "limit")))
        if hint is not None:
            return hint
    return None


def _hint(remaining: float, reset: float, limit: float | None = None) -> RateLimitHint | None:
    if not (0 <= remaining < math.inf and 0 < reset <= MAX_RESET_SECONDS):
        return None
    return RateLimitHint(remaining, reset, limit)


def _first_number(value: str | None) -> float | None:
    if value is None or len(value) > _MAX_FIELD_CHARS:
        return None
    match = _NUMBER.match(value)
    return float(match.group(1)) if match else None


def _structured(value: str) -> RateLimitHint | None:
    """`"name";r=50;t=30, "other";r=900;t=3600`: the item with the lowest r / t."""
    if len(value) > _MAX_FIELD_CHARS or ";" not in value:
        return None
    best: RateLimitHint | None = None
    for item in value.split(","):
        params = dict(_PARAM.findall(item))
        if "r" not in params or "t" not in params:
            continue
        hint = _hint(float(params["r"]), float(params["t"]))
        if hint is not None and (best is None or hint.rate_per_second < best.rate_per_second):
            best = hint
    return best


def _dictionary(value: str) -> RateLimitHint | None:
    """`limit=100, remaining=50, reset=30`."""
    if len(value) > _MAX_FIELD_CHARS:
        return None
    fields: dict[str, float] = {}
    for member in value.split(","):
        key, sep, number = member.partition("=")
        parsed = _first_number(number) if sep else None
        if parsed is not None:
            fields[key.strip().lower()] = parsed
    if "remaining" not in fields or "reset" not in fields:
        return None
    return _hint(fields["remaining"], fields["reset"], fields.get("limit"))
