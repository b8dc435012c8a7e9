"""Emulator settings: one mutable dataclass, read live by the request path.

The server reads every field on each request, so a test may either call
`Emulator.configure(...)` (validated) or assign a field directly (unchecked).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

DEFAULT_ACCESS_KEY_ID = "ak-demo"
DEFAULT_ACCESS_KEY_SECRET = "sk-demo"
DEFAULT_USERPOOL_ID = "emulator-userpool"

ERROR_STYLES = ("body", "http")
RATE_LIMIT_HEADER_STYLES = ("off", "ietf", "x")
KICK_FAILURES = ("false", "error")
MAX_USERS = 100_000_000  # a filtered listing scans the directory once (~2 us a user)
# Fault kinds in the order their probabilities are stacked on one uniform draw.
FAULT_KINDS = ("reset", "hang", "html_502", "5xx", "bad_json", "busy")
_PROBABILITIES = tuple(f"fault_{kind}" for kind in FAULT_KINDS)
_SECRET_FIELDS = frozenset({"access_key_secret"})


@dataclass
class EmulatorOptions:
    """Everything the emulator can be told. Defaults give a fault-free, unlimited server."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port
    access_key_id: str = DEFAULT_ACCESS_KEY_ID
    access_key_secret: str = DEFAULT_ACCESS_KEY_SECRET
    userpool_id: str = DEFAULT_USERPOOL_ID
    # Truth: blake2b(seed, app, user) < active_share, unless the truth file names the pair.
    seed: int = 0
    active_share: float = 0.5
    truth_file: str | None = None
    missing_prefix: str = "missing-"  # ids starting with it do not exist ("" disables)
    # How rejections travel (spec 9): "body" = HTTP 200 + envelope, "http" = real status.
    error_style: str = "body"
    # Token bucket over both API endpoints; rate 0 = unlimited, burst 0 = max(1, rate).
    rate: float = 0.0
    burst: float = 0.0
    retry_after: bool = True  # send Retry-After with 429
    retry_after_seconds: float | None = None  # fixed value instead of the bucket's estimate
    delay_ms: float = 0.0
    jitter_ms: float = 0.0  # uniform extra delay in [0, jitter_ms]
    # Fault probabilities per check-session-status request, mutually exclusive.
    fault_reset: float = 0.0
    fault_hang: float = 0.0
    fault_html_502: float = 0.0
    fault_5xx: float = 0.0
    fault_bad_json: float = 0.0
    fault_busy: float = 0.0
    faults_on_token: bool = False  # also draw faults for get-management-token
    hang_seconds: float = 60.0
    token_ttl: int = 7200
    date_window_seconds: float = 900.0  # +-15 min (spec 9)
    # Directory (off by default): generated users `user-000001`.., apps as "id" or "id=name"
    # (a string is split on commas; a bare number N means app-001..app-N), and the share of
    # (app, user) pairs where the user has ever logged in.
    users: int = 0
    apps: tuple[str, ...] = ()
    login_share: float = 0.3
    # kick-users: the share of users (hashed) whose kicks fail, and how: "false" answers
    # data.success false, "error" a 400 envelope. Such a user's kicks always fail.
    kick_failure_share: float = 0.0
    kick_failure: str = "false"
    # Requests served at once (after the throttle); the rest queue in arrival order. 0 = no cap.
    capacity: int = 0
    # RateLimit-* (ietf) or X-RateLimit-* (x) headers from the token bucket; Authing sends none.
    rate_limit_headers: str = "off"

    def __post_init__(self) -> None:
        self.apps = normalized_apps(self.apps)
        validate(self)

    def public(self) -> dict[str, Any]:
        """Fields as JSON-able values, secret redacted (for /__config and logs)."""
        data = dataclasses.asdict(self)
        for name in _SECRET_FIELDS:
            data[name] = "***"
        data["apps"] = list(self.apps)
        return data


def validate(options: EmulatorOptions) -> None:
    problems: list[str] = []
    if options.error_style not in ERROR_STYLES:
        problems.append(f"error_style: must be one of {ERROR_STYLES}, got {options.error_style!r}")
    for name in _PROBABILITIES:
        value = getattr(options, name)
        if not 0.0 <= value <= 1.0:
            problems.append(f"{name}: must be within [0, 1], got {value!r}")
    if sum(getattr(options, name) for name in _PROBABILITIES) > 1.0 + 1e-9:
        problems.append("fault_*: probabilities must sum to at most 1")
    if not 0.0 <= options.active_share <= 1.0:
        problems.append(f"active_share: must be within [0, 1], got {options.active_share!r}")
    for name in ("rate", "burst", "delay_ms", "jitter_ms", "hang_seconds"):
        if getattr(options, name) < 0:
            problems.append(f"{name}: must be >= 0, got {getattr(options, name)!r}")
    if 0 < options.burst < 1:
        problems.append(f"burst: must be 0 (= max(1, rate)) or >= 1, got {options.burst!r}")
    if options.retry_after_seconds is not None and options.retry_after_seconds < 0:
        problems.append(f"retry_after_seconds: must be >= 0, got {options.retry_after_seconds!r}")
    if options.token_ttl < 1:
        problems.append(f"token_ttl: must be >= 1, got {options.token_ttl!r}")
    if options.date_window_seconds <= 0:
        problems.append(f"date_window_seconds: must be > 0, got {options.date_window_seconds!r}")
    if options.rate_limit_headers not in RATE_LIMIT_HEADER_STYLES:
        problems.append(
            f"rate_limit_headers: must be one of {RATE_LIMIT_HEADER_STYLES}, "
            f"got {options.rate_limit_headers!r}"
        )
    if options.kick_failure not in KICK_FAILURES:
        problems.append(
            f"kick_failure: must be one of {KICK_FAILURES}, got {options.kick_failure!r}"
        )
    for name in ("login_share", "kick_failure_share"):
        value = getattr(options, name)
        if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
            problems.append(f"{name}: must be within [0, 1], got {value!r}")
    for name in ("users", "capacity"):
        value = getattr(options, name)
        if type(value) is not int or value < 0:
            problems.append(f"{name}: must be an integer >= 0, got {value!r}")
    if type(options.users) is int and options.users > MAX_USERS:
        problems.append(f"users: must be at most {MAX_USERS}, got {options.users!r}")
    problems.extend(_app_problems(options.apps))
    if not options.access_key_id or not options.access_key_secret:
        problems.append("access_key_id/access_key_secret: must be non-empty")
    if problems:
        raise ValueError("emulator options: " + "; ".join(problems))


def updated(options: EmulatorOptions, changes: dict[str, Any]) -> EmulatorOptions:
    """A validated copy with `changes` applied; unknown names are an error."""
    names = {f.name for f in dataclasses.fields(EmulatorOptions)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(f"emulator options: unknown option(s) {', '.join(unknown)}")
    return dataclasses.replace(options, **changes)


def normalized_apps(apps: object) -> object:
    """`apps` as a tuple of entries: a string is split on commas, a bare number N stands for
    `app-001=App 1` .. `app-N=App N`. Anything else is left for `validate` to reject."""
    if isinstance(apps, str):
        text = apps.strip()
        if text.isdigit():
            return tuple(f"app-{n:03d}=App {n}" for n in range(1, int(text) + 1))
        return tuple(entry.strip() for entry in text.split(",")) if text else ()
    if isinstance(apps, int) and not isinstance(apps, bool):
        return normalized_apps(str(apps)) if apps >= 0 else apps
    if isinstance(apps, list | tuple):
        return tuple(apps)
    return apps


def _app_problems(apps: object) -> list[str]:
    if not isinstance(apps, tuple) or not all(isinstance(entry, str) for entry in apps):
        return [f"apps: must be a list of 'id' or 'id=name' entries, got {apps!r}"]
    seen: set[str] = set()
    for number, entry in enumerate(apps, start=1):
        app_id = entry.partition("=")[0].strip()
        if not app_id:
            return [f"apps: entry {number} has no app id, got {entry!r}"]
        if app_id in seen:
            return [f"apps: app id {app_id!r} appears twice"]
        seen.add(app_id)
    return []
