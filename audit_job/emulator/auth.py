"""Server-side checks for both auth modes (spec sections 2, 4 and 9), with an injected clock.

Each check returns None when the request may pass, or the reason it is rejected. Reasons map to
the envelope the emulator answers (`REJECTIONS`); all are `statusCode` 401, a guess (spec 9).
`Authenticator` picks the mode from the `authorization` header: `authing KEY:SIG` is a signed
request (the parameters are the POST body's top-level keys or the GET query), anything else a
bearer token.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from audit_job.signing import SIGNATURE_METHOD, string_to_sign

if TYPE_CHECKING:
    from audit_job.emulator.options import EmulatorOptions

# reason -> (apiCode, message zh-CN, message en-US). Codes from the legacy error-code page:
# 2020 "not logged in, no access", 2224 "user pool does not exist", 1001 "no permission".
REJECTIONS: dict[str, tuple[int, str, str]] = {
    "missing_auth": (2020, "尚未登录，无权限访问此请求", "missing authorization header"),
    "unknown_key": (2020, "accessKeyId 不存在", "unknown accessKeyId"),
    "bad_signature": (2020, "签名校验失败", "signature mismatch"),
    "bad_signature_method": (2020, "不支持的签名算法", "unsupported signature method"),
    "missing_nonce": (2020, "缺少签名随机数", "missing x-authing-signature-nonce"),
    "missing_date": (2020, "缺少 date 请求头", "missing date header"),
    "bad_date": (2020, "date 请求头格式错误", "unparseable date header"),
    "stale_date": (2020, "请求时间超出允许范围", "request date outside the allowed window"),
    "nonce_reused": (2020, "签名随机数已被使用", "signature nonce already used"),
    "unknown_token": (2020, "access_token 无效", "invalid access token"),
    "expired_token": (2020, "access_token 已过期", "access token expired"),
    "userpool_mismatch": (2224, "用户池不存在", "user pool does not exist"),
    "bad_credentials": (1001, "accessKeyId 或 accessKeySecret 错误", "wrong access key or secret"),
}


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class DateParser:
    """IMF-fixdate or epoch milliseconds -> epoch seconds; remembers the last string seen,
    because every request within one second carries the same date."""

    def __init__(self) -> None:
        self._last: tuple[str, float | None] = ("", None)

    def __call__(self, raw: str) -> float | None:
        if raw == self._last[0]:
            return self._last[1]
        value: float | None
        if raw.isdigit():
            value = int(raw) / 1000.0  # legacy Java SDK form (spec 2)
        else:
            try:
                parsed = parsedate_to_datetime(raw)
            except (TypeError, ValueError, IndexError):
                parsed = None
            value = None if parsed is None or parsed.tzinfo is None else parsed.timestamp()
        self._last = (raw, value)
        return value


class NonceBook:
    """Nonces seen with a valid signature, kept until their date leaves the window."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._expiry: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, nonce: str, expires_at: float, now: float) -> bool:
        """Record `nonce`; False when it is already recorded (a replay)."""
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            self._seen.discard(heapq.heappop(expiry)[1])
        if nonce in self._seen:
            return False
        self._seen.add(nonce)
        heapq.heappush(expiry, (expires_at, nonce))
        return True


def verify_signature(
    *,
    method: str,
    path: str,
    headers: Mapping[str, str],
    params: Mapping[str, Any],
    authorization: str,
    access_key_id: str,
    access_key_secret: str,
    window_seconds: float,
    now: float,
    parse_date: Callable[[str], float | None],
    nonces: NonceBook,
) -> str | None:
    """Rebuild the string to sign from what was received and compare (spec 9)."""
    scheme, _, credential = authorization.partition(" ")
    key_id, sep, received = credential.strip().rpartition(":")
    if scheme.lower() != "authing" or not sep or not key_id:
        return "bad_signature"
    if not hmac.compare_digest(key_id.encode(), access_key_id.encode()):
        return "unknown_key"
    sig_method = headers.get("x-authing-signature-method")
    if sig_method is not None and sig_method.strip() != SIGNATURE_METHOD:
        return "bad_signature_method"
    message = string_to_sign(method, path, headers, params)
    digest = hmac.new(access_key_secret.encode(), message.encode(), hashlib.sha1).digest()
    expected = base64.b64encode(digest).decode("ascii")
    if not hmac.compare_digest(expected.encode(), received.encode()):
        return "bad_signature"
    raw_date = headers.get("date")
    if raw_date is None:
        return "missing_date"
    sent_at = parse_date(raw_date.strip())
    if sent_at is None:
        return "bad_date"
    if abs(now - sent_at) > window_seconds:
        return "stale_date"
    nonce = headers.get("x-authing-signature-nonce", "").strip()
    if not nonce:
        return "missing_nonce"
    if not nonces.add(nonce, sent_at + window_seconds, now):
        return "nonce_reused"
    return None


class TokenBook:
    """Management tokens this emulator issued: token -> (userpool id, expiry epoch seconds)."""

    _KEEP_EXPIRED_SECONDS = 3600.0  # so an expired token is told apart from a forged one

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}
        self._key = secrets.token_bytes(32)

    def issue(self, userpool_id: str, ttl_seconds: int) -> str:
        now = self._clock()
        horizon = now - self._KEEP_EXPIRED_SECONDS
        for token in [t for t, (_, exp) in self._tokens.items() if exp < horizon]:
            del self._tokens[token]
        header = _b64url(b'{"alg":"HS256","typ":"JWT"}')
        # The Python SDK decodes the payload with plain b64decode (not urlsafe): re-draw the id
        # until the segment holds no `-` or `_`, which that decoder would silently drop.
        for _ in range(256):
            claims = {
                "scoped_userpool_id": userpool_id,
                "iat": int(now),
                "exp": int(now) + ttl_seconds,
                "jti": secrets.token_hex(8),
            }
            payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
            if "-" not in payload and "_" not in payload:
                break
        signing_input = f"{header}.{payload}".encode()
        sig = _b64url(hmac.new(self._key, signing_input, hashlib.sha256).digest())
        token = f"{header}.{payload}.{sig}"
        self._tokens[token] = (userpool_id, now + ttl_seconds)
        return token

    def check(
        self, authorization: str, userpool_header: str | None, userpool_id: str
    ) -> str | None:
        token = authorization.strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        entry = self._tokens.get(token)
        if entry is None:
            return "unknown_token"
        if entry[1] <= self._clock():
            return "expired_token"
        if userpool_header is None or userpool_header.strip() != userpool_id:
            return "userpool_mismatch"
        if entry[0] != userpool_id:
            return "unknown_token"
        return None


class Authenticator:
    """Both auth modes against the live options; owns the token, nonce and date books."""

    def __init__(self, options: Callable[[], EmulatorOptions]) -> None:
        self._options = options
        self.tokens = TokenBook()
        self.nonces = NonceBook()
        self._parse_date = DateParser()

    def check(
        self, method: str, path: str, headers: Mapping[str, str], params: Mapping[str, Any]
    ) -> str | None:
        authorization = headers.get("authorization", "").strip()
        if not authorization:
            return "missing_auth"
        options = self._options()
        if authorization[:8].lower() == "authing ":
            return verify_signature(
                method=method,
                path=path,
                headers=headers,
                params=params,
                authorization=authorization,
                access_key_id=options.access_key_id,
                access_key_secret=options.access_key_secret,
                window_seconds=options.date_window_seconds,
                now=time.time(),
                parse_date=self._parse_date,
                nonces=self.nonces,
            )
        return self.tokens.check(
            authorization, headers.get("x-authing-userpool-id"), options.userpool_id
        )
