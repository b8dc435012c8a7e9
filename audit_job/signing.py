"""Authing request signing, `signature` auth mode (spec sections 2 and 3). Pure functions.

`string_to_sign` is the general rule, used by the emulator to verify any request.
`Signer.headers_for_check` is the client's hot path: same bytes, less work per request
(the constant header lines and the HMAC key schedule are prepared once).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Mapping
from email.utils import formatdate
from typing import Any

CHECK_SESSION_PATH = "/api/v3/check-session-status"
SIGNATURE_METHOD = "HMAC-SHA1"
SIGNATURE_VERSION = "1.0"
_BLANKS = str.maketrans({"\t": " ", "\n": " ", "\r": " ", "\f": " "})


def is_signed_header(name: str) -> bool:
    lower = name.lower()
    return lower == "date" or lower.startswith("x-authing-")


def canonical_headers(headers: Mapping[str, str]) -> str:
    """`name:value\\n` for `date` and every `x-authing-*` header, sorted by lowercase name."""
    picked = sorted((k.lower(), v) for k, v in headers.items() if is_signed_header(k))
    return "".join(f"{name}:{value.translate(_BLANKS).strip()}\n" for name, value in picked)


def canonical_value(value: Any) -> str:
    """A parameter value as the Node SDK writes it into the canonical resource."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def canonical_resource(path: str, params: Mapping[str, Any]) -> str:
    if not params:
        return path
    pairs = "&".join(f"{key}={canonical_value(params[key])}" for key in sorted(params))
    return f"{path}?{pairs}"


def string_to_sign(
    method: str, path: str, headers: Mapping[str, str], params: Mapping[str, Any]
) -> str:
    return f"{method.upper()}\n{canonical_headers(headers)}{canonical_resource(path, params)}"


def signature(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def authorization(access_key_id: str, secret: str, message: str) -> str:
    return f"authing {access_key_id}:{signature(secret, message)}"


def http_date(epoch_seconds: float) -> str:
    """IMF-fixdate, e.g. `Wed, 25 Nov 2026 08:00:00 GMT`."""
    return formatdate(epoch_seconds, usegmt=True)


def new_nonce() -> str:
    return secrets.token_hex(16)


class NoncePool:
    """32 lowercase hex characters per call from the OS's CSPRNG, fetched 4 KiB at a time:
    one system call per 256 requests instead of one per request (the hot path)."""

    def __init__(self, chunk_bytes: int = 4096) -> None:
        self._chunk = chunk_bytes
        self._hex = ""
        self._at = 0

    def __call__(self) -> str:
        at = self._at
        if at + 32 > len(self._hex):
            self._hex = os.urandom(self._chunk).hex()
            at = 0
        self._at = at + 32
        return self._hex[at : at + 32]


class Signer:
    """Signs check-session-status requests for one access key."""

    def __init__(
        self,
        access_key_id: str,
        secret: str,
        *,
        lang: str = "zh-CN",
        sdk_version: str,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] | None = None,
    ) -> None:
        self._key_id = access_key_id
        self._mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
        self._clock = clock
        self._nonce = nonce if nonce is not None else NoncePool()
        self._lang = lang
        self._sdk_version = sdk_version
        # Sorted canonical lines around the two that change per request (date, nonce).
        self._middle = (
            f"x-authing-lang:{lang}\n"
            f"x-authing-sdk-version:{sdk_version}\n"
            f"x-authing-signature-method:{SIGNATURE_METHOD}\n"
            "x-authing-signature-nonce:"
        )
        self._tail = f"\nx-authing-signature-version:{SIGNATURE_VERSION}\n{CHECK_SESSION_PATH}?"
        self._date_second = -1
        self._date = ""

    def _current_date(self) -> str:
        second = int(self._clock())
        if second != self._date_second:
            self._date_second = second
            self._date = http_date(second)
        return self._date

    def headers_for_check(self, app_id: str, user_id: str) -> dict[str, str]:
        """Headers for one attempt: fresh date, nonce and signature (spec 2)."""
        date = self._current_date()
        nonce = self._nonce()
        message = (
            f"POST\ndate:{date}\n{self._middle}{nonce}{self._tail}appId={app_id}&userId={user_id}"
        )
        mac = self._mac.copy()
        mac.update(message.encode())
        sig = base64.b64encode(mac.digest()).decode("ascii")
        return {
            "content-type": "application/json",
            "accept": "application/json",
            "x-authing-signature-nonce": nonce,
            "x-authing-signature-method": SIGNATURE_METHOD,
            "x-authing-signature-version": SIGNATURE_VERSION,
            "x-authing-sdk-version": self._sdk_version,
            "x-authing-lang": self._lang,
            "date": date,
            "authorization": f"authing {self._key_id}:{sig}",
        }


def check_body(app_id: str, user_id: str) -> bytes:
    """Compact UTF-8 JSON with exactly the two keys, non-ASCII unescaped (spec 1)."""
    if _needs_no_escape(app_id) and _needs_no_escape(user_id):
        # Per request: the same bytes json.dumps makes, without building a dict to encode.
        return f'{{"appId":"{app_id}","userId":"{user_id}"}}'.encode()
    return json.dumps(
        {"appId": app_id, "userId": user_id}, separators=(",", ":"), ensure_ascii=False
    ).encode()


def _needs_no_escape(value: str) -> bool:
    """True when JSON writes `value` as is: printable, no quote, no backslash."""
    return value.isprintable() and '"' not in value and "\\" not in value
