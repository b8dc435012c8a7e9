"""`audit-job emulator`: run the Authing stand-in until SIGINT/SIGTERM.

The first stdout line is `emulator listening on http://HOST:PORT`, so scripts can start it with
`--port 0` and read the URL. The server (aiohttp) is imported when the command runs; the
options and their defaults are plain Python.
"""

from __future__ import annotations

import re
import sys
from enum import StrEnum
from typing import Annotated

import typer

from audit_job.emulator import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_USERPOOL_ID,
    EmulatorOptions,
    load_truth_file,
)


class ErrorStyle(StrEnum):
    BODY = "body"
    HTTP = "http"


class RateLimitHeaders(StrEnum):
    OFF = "off"
    IETF = "ietf"
    X = "x"


class KickFailure(StrEnum):
    FALSE = "false"
    ERROR = "error"


_Probability = Annotated[float, typer.Option(min=0.0, max=1.0)]


def emulator(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="0 picks a free port.")] = 0,
    access_key_id: Annotated[
        str, typer.Option(envvar="AUDIT_JOB_EMULATOR_ACCESS_KEY_ID")
    ] = DEFAULT_ACCESS_KEY_ID,
    access_key_secret: Annotated[
        str, typer.Option(envvar="AUDIT_JOB_EMULATOR_ACCESS_KEY_SECRET", show_default=False)
    ] = DEFAULT_ACCESS_KEY_SECRET,
    userpool_id: Annotated[str, typer.Option(help="scoped_userpool_id of issued tokens.")] = (
        DEFAULT_USERPOOL_ID
    ),
    seed: Annotated[int, typer.Option(help="Seeds the truth hash and the fault RNG.")] = 0,
    active_share: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
    truth_file: Annotated[
        str | None, typer.Option(help="CSV app_id,user_id,active overriding the hash.")
    ] = None,
    missing_prefix: Annotated[
        str, typer.Option(help="Ids starting with it do not exist; '' disables.")
    ] = "missing-",
    error_style: Annotated[
        ErrorStyle, typer.Option(help="body: HTTP 200 + error envelope; http: real status.")
    ] = ErrorStyle.BODY,
    rate: Annotated[float, typer.Option(min=0.0, help="Requests/s allowed; 0 = no limit.")] = 0.0,
    burst: Annotated[float, typer.Option(min=0.0, help="Bucket size; 0 = max(1, rate).")] = 0.0,
    retry_after: Annotated[bool, typer.Option(help="Send Retry-After with 429.")] = True,
    retry_after_seconds: Annotated[
        float | None, typer.Option(help="Fixed Retry-After instead of the bucket's estimate.")
    ] = None,
    delay_ms: Annotated[float, typer.Option(min=0.0)] = 0.0,
    jitter_ms: Annotated[float, typer.Option(min=0.0, help="Uniform extra delay.")] = 0.0,
    fault_5xx: _Probability = 0.0,
    fault_html_502: _Probability = 0.0,
    fault_hang: _Probability = 0.0,
    fault_reset: _Probability = 0.0,
    fault_bad_json: _Probability = 0.0,
    fault_busy: _Probability = 0.0,
    faults_on_token: Annotated[bool, typer.Option(help="Faults also hit the token call.")] = False,
    hang_seconds: Annotated[float, typer.Option(min=0.0)] = 60.0,
    token_ttl: Annotated[int, typer.Option(min=1, help="expires_in of tokens, seconds.")] = 7200,
    date_window_seconds: Annotated[float, typer.Option(min=1.0)] = 900.0,
    users: Annotated[
        int, typer.Option(min=0, help="Generated directory users user-000001..; 0 = none.")
    ] = 0,
    apps: Annotated[
        str,
        typer.Option(help="Directory apps: 'id[=name],...', or a number N for app-001..app-N."),
    ] = "",
    login_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of (app, user) ever logged in.")
    ] = 0.3,
    capacity: Annotated[
        int, typer.Option(min=0, help="Requests served at once, the rest queue; 0 = no cap.")
    ] = 0,
    rate_limit_headers: Annotated[
        RateLimitHeaders,
        typer.Option(help="RateLimit-* (ietf) or X-RateLimit-* (x) headers from the bucket."),
    ] = RateLimitHeaders.OFF,
    kick_failure_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of users whose kicks fail.")
    ] = 0.0,
    kick_failure: Annotated[
        KickFailure, typer.Option(help="false: data.success false; error: a 400 envelope.")
    ] = KickFailure.FALSE,
) -> None:
    """Run an Authing API emulator (check-session-status, get-management-token, list-users,
    get-user-loggedin-apps, kick-users, list-applications, list-application-active-users)."""
    import asyncio

    from audit_job.emulator import serve

    try:
        options = EmulatorOptions(
            host=host,
            port=port,
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            userpool_id=userpool_id,
            seed=seed,
            active_share=active_share,
            truth_file=truth_file,
            missing_prefix=missing_prefix,
            error_style=error_style.value,
            rate=rate,
            burst=burst,
            retry_after=retry_after,
            retry_after_seconds=retry_after_seconds,
            delay_ms=delay_ms,
            jitter_ms=jitter_ms,
            fault_5xx=fault_5xx,
            fault_html_502=fault_html_502,
            fault_hang=fault_hang,
            fault_reset=fault_reset,
            fault_bad_json=fault_bad_json,
            fault_busy=fault_busy,
            faults_on_token=faults_on_token,
            hang_seconds=hang_seconds,
            token_ttl=token_ttl,
            date_window_seconds=date_window_seconds,
            users=users,
            apps=apps,
            login_share=login_share,
            capacity=capacity,
            rate_limit_headers=rate_limit_headers.value,
            kick_failure_share=kick_failure_share,
            kick_failure=kick_failure.value,
        )
        if truth_file:
            load_truth_file(truth_file)  # fail on a bad file before listening
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(_flag_names(str(exc))) from exc

    def announce(url: str) -> None:
        print(f"emulator listening on {url}", flush=True)

    try:
        asyncio.run(serve(options, announce))
    except OSError as exc:
        print(f"emulator: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        raise typer.Exit(1) from exc


def _flag_names(message: str) -> str:
    """`emulator options: apps: ...` -> `--apps: ...`: name the flag the operator typed."""

    def flag(match: re.Match[str]) -> str:
        lead = "; " if match.group(1) == "; " else ""
        return f"{lead}--{match.group(2).replace('_', '-')}:"

    return re.sub(r"(emulator options: |; )(\w+):", flag, message)


def register(app: typer.Typer) -> None:
    """Add the `emulator` command to the root CLI."""
    app.command("emulator")(emulator)
