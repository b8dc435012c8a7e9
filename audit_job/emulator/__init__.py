"""Authing stand-in for tests and the demo (the Authing wire-protocol spec, authing-api.md).

    async with Emulator(EmulatorOptions(fault_5xx=0.1)) as emu:
        ... requests to emu.url ...
        emu.configure(rate=50)          # mid-run changes, also POST /__config
        emu.stats()                     # also GET /__stats; emu.reset_stats() or POST /__reset

Credentials default to access key `ak-demo` / secret `sk-demo`, user pool `emulator-userpool`.
`truth(app_id, user_id, seed)` computes the expected answer without a server.

Faults are drawn once per check-session-status request from a RNG seeded with `seed`; the kinds
exclude each other (probabilities stack in FAULT_KINDS order, sum <= 1). The rate limit covers
both API endpoints. Stats keys: requests_total, check_requests, token_requests, tokens_issued,
per_pair ("app\tuser" -> n), answers (active, inactive, user_not_found, app_not_found,
auth_failed, bad_request, throttled, fault, token_issued), throttled, faults (kind -> n),
auth_failures, auth_failures_by_reason, max_per_second (busiest sliding 1 s window over both
API endpoints), in_flight, max_in_flight (requests inside a handler; a request only stays
there while it waits, so set delay_ms to observe a client's concurrency).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from audit_job.emulator.options import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_USERPOOL_ID,
    ERROR_STYLES,
    FAULT_KINDS,
    EmulatorOptions,
)
from audit_job.emulator.stats import PAIR_SEPARATOR
from audit_job.emulator.throttle import TokenBucket
from audit_job.emulator.truth import Verdict, hashed_active, load_truth_file, truth, verdict

if TYPE_CHECKING:
    from audit_job.emulator.server import TOKEN_PATH, Emulator, serve

# The server (aiohttp.web) loads on first use: the CLI reads the defaults above to build
# `audit-job emulator --help`, and every `audit-job` process builds that command.
_SERVER_NAMES = ("TOKEN_PATH", "Emulator", "serve")


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        from audit_job.emulator import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_ACCESS_KEY_ID",
    "DEFAULT_ACCESS_KEY_SECRET",
    "DEFAULT_USERPOOL_ID",
    "ERROR_STYLES",
    "FAULT_KINDS",
    "PAIR_SEPARATOR",
    "TOKEN_PATH",
    "Emulator",
    "EmulatorOptions",
    "TokenBucket",
    "Verdict",
    "hashed_active",
    "load_truth_file",
    "serve",
    "truth",
    "verdict",
]
