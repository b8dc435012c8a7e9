"""Authing stand-in for tests, the demo and the benchmarks (the Authing wire-protocol spec,
authing-api.md, and authing-api-more.md for the directory endpoints).

    async with Emulator(EmulatorOptions(fault_5xx=0.1)) as emu:
        ... requests to emu.url ...
        emu.configure(rate=50)          # mid-run changes, also POST /__config
        emu.stats()                     # also GET /__stats; emu.reset_stats() or POST /__reset

Credentials default to access key `ak-demo` / secret `sk-demo`, user pool `emulator-userpool`.
`truth(app_id, user_id, seed)` computes the expected answer without a server (outside a
directory); `emu.verdict` / `emu.truth` answer for any pair (rules: world.py).

Endpoints, both auth modes: check-session-status, get-management-token, list-users (POST, and
the legacy GET), get-user-loggedin-apps, kick-users, list-applications,
list-application-active-users. The directory (`users`, `apps`, off by default) is generated
from the seed (directory.py); `emu.remove_users`, `add_users`, `remove_apps`, `disable_apps`,
`enable_apps`, `add_apps` (also POST /__directory/...) change it at runtime.

Faults are drawn once per API request (the token call only with `faults_on_token`) from a RNG
seeded with `seed`; the kinds exclude each other (probabilities stack in FAULT_KINDS order,
sum <= 1). One token bucket covers every API endpoint; `capacity` serves that many at once and
queues the rest (gate.py). Stats keys: requests_total, check_requests, token_requests,
tokens_issued, requests_by_endpoint, per_pair ("app\tuser" -> n, check-session-status),
answers (active, inactive, user_not_found, app_not_found, auth_failed, bad_request,
throttled, fault, token_issued, listed, loggedin_apps, kicked, kick_failed), throttled,
faults (kind -> n), auth_failures, auth_failures_by_reason, kicks_per_user,
kick_failures_per_user, kicked_pairs (state: kept by a reset), max_per_second (busiest
sliding 1 s window over the API endpoints), in_flight, max_in_flight (requests inside a
handler), queued, max_queued (waiting for a capacity slot), serving, max_serving (in their
service time), latency_ms (count, mean, p50, p90, p99, max: arrival to answer, throttled and
unanswered requests left out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from audit_job.emulator.directory import Directory
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
    "Directory",
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
