"""Standard Webhooks signatures (https://www.standardwebhooks.com, spec 1.0.0).

- The signing secret is `whsec_` followed by the base64 of the key; the key (24 to 64
  random bytes, as the spec asks) is what HMAC uses. A secret given without the prefix is
  read as the base64 alone, as the reference libraries do.
- Signed content: `{webhook-id}.{webhook-timestamp}.{body}`, the exact body bytes sent.
- `webhook-signature`: `v1,` + base64(HMAC-SHA256(key, signed content)).
- `webhook-timestamp`: integer seconds since the epoch, of this attempt (receivers reject
  old ones); `webhook-id`: the same for every attempt of the same batch, and never
  contains a `.` (the spec forbids it there).
Nothing here formats the secret or the key into a message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence

from audit_job.errors import ConfigError
from audit_job.store.events import EventRow

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64


def parse_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret, or ValueError (saying what, never the value)."""
    text = secret.strip()
    text = text.removeprefix(SECRET_PREFIX)
    if not text:
        raise ValueError("is empty")
    padded = text + "=" * (-len(text) % 4)
    try:
        key = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not whsec_ followed by base64 (README: Event feed)") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(
            f"holds a {len(key)}-byte key; Standard Webhooks asks for {MIN_KEY_BYTES} to "
            f"{MAX_KEY_BYTES} random bytes"
        )
    return key


def load_key(sink: str, secret_env: str, env: Mapping[str, str]) -> tuple[bytes, str]:
    """The key (and the secret text, to keep out of logs) from the sink's variable."""
    value = env.get(secret_env)
    where = f"[[sink]] {sink}: secret_env {secret_env}"
    if value is None:
        raise ConfigError(f"{where}: the environment variable is not set")
    if not value.strip():
        raise ConfigError(f"{where}: the environment variable is empty")
    try:
        return parse_secret(value), value
    except ValueError as exc:
        raise ConfigError(f"{where}: the secret {exc}") from None


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    content = message_id.encode() + b"." + str(timestamp).encode() + b"." + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def message_id(rows: Sequence[EventRow], body: bytes) -> str:
    """`msg_FIRST-LAST_HASH`: stable across retries of one batch, different for any other
    batch (the hash covers the body, which is fixed by the events it holds)."""
    digest = hashlib.sha256(body).hexdigest()[:16]
    return f"msg_{rows[0].id}-{rows[-1].id}_{digest}"


def headers(key: bytes, message: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, message, timestamp, body),
    }
