"""The headers of a check made in token mode (spec 5): a bearer token, the language and
the SDK version the server logs. Signature mode gets its headers from signing.Signer."""

from __future__ import annotations

from audit_job import __version__
from audit_job.token import ManagementToken

SDK_VERSION = f"audit-job:{__version__}"


def bearer_headers(token: ManagementToken, lang: str) -> dict[str, str]:
    """Headers for every check made with `token`; the caller keeps them until the token
    changes, so this runs once per token."""
    headers = {
        "content-type": "application/json",
        "accept": "application/json",
        "authorization": f"Bearer {token.access_token}",
        "x-authing-lang": lang,
        "x-authing-sdk-version": SDK_VERSION,
    }
    if token.userpool_id:
        headers["x-authing-userpool-id"] = token.userpool_id
    return headers
