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

    def __post_init__(self) -> None:
        validate(self)

    def public(self) -> dict[str, Any]:
        """Fields as JSON-able values, secret redacted (for /__config and logs)."""
        data = dataclasses.asdict(self)
        for name in _SECRET_FIELDS:
            data[name] = "***"
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
