"""The words of a run-level failure: credentials rejected (with the clock-skew hint of
spec 6) or a TLS certificate refused. Built once per failure, never per request."""

from __future__ import annotations

from collections.abc import Callable

from audit_job.errors import AuthRejected, TlsRejected
from audit_job.models import Answer

CLOCK_SKEW_LIMIT_SECONDS = 60.0  # spec 6: report a skew above a minute


def auth_rejection(
    answer: Answer,
    times: int = 1,
    *,
    host: str,
    auth: str,
    clock: Callable[[], float] | None = None,
) -> AuthRejected:
    """The error for an auth-class answer seen `times` times in a row: codes, the server's
    message, and, when `clock` is given (signed requests), a clock skew above a minute."""
    codes = [f"HTTP {answer.http_status}"]
    if answer.status_code is not None:
        codes.append(f"statusCode {answer.status_code}")
    if answer.api_code is not None:
        codes.append(f"apiCode {answer.api_code}")
    said = f": {answer.message[:120]}" if answer.message else ""
    if answer.status_code is None:  # no envelope: the detail says more (3xx, 404 page)
        said = f": {answer.detail}"
    repeated = f" {times} times in a row" if times > 1 else ""
    text = (
        f"{host}: credentials rejected{repeated} "
        f"({', '.join(codes)}{said}); check [authing] access_key_id, access_key_secret, "
        f"auth ({auth}) and host"
    )
    if clock is not None and answer.server_date is not None:
        skew = clock() - answer.server_date.timestamp()
        if abs(skew) > CLOCK_SKEW_LIMIT_SECONDS:
            text += (
                f"; the local clock is {abs(skew):.0f} s "
                f"{'ahead of' if skew > 0 else 'behind'} the server's Date, and signed "
                "requests carry the date: synchronise the clock (NTP)"
            )
    return AuthRejected(text)


def tls_rejection(host: str, answer: Answer) -> TlsRejected:
    """The error for a certificate the connector refused (a `fatal` answer)."""
    return TlsRejected(
        f"{host}: TLS certificate verification failed ({answer.detail}); "
        "set [authing] ca_bundle to trust a private CA, or (insecure) "
        "[authing] verify_tls = false"
    )
