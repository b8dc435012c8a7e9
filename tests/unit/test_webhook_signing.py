"""Standard Webhooks signatures, checked by the specification's reference verifier (the
`standardwebhooks` package), an implementation independent of ours."""

from __future__ import annotations

import base64
import os
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from audit_job.errors import ConfigError
from audit_job.events import envelope, signing
from audit_job.store.events import EventRow

KEY = os.urandom(32)
SECRET = "whsec_" + base64.b64encode(KEY).decode()


def rows(*ids: int) -> list[EventRow]:
    at = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    return [EventRow(i, "run.finished", at, 7, None, None, '{"status":"succeeded"}') for i in ids]


def test_the_reference_verifier_accepts_our_signature() -> None:
    batch = rows(1, 2, 3)
    body = envelope.batch_body(batch)
    message = signing.message_id(batch, body)
    headers = signing.headers(signing.parse_secret(SECRET), message, int(time.time()), body)
    parsed = Webhook(SECRET).verify(body, headers)
    assert [e["id"] for e in parsed["events"]] == [1, 2, 3]
    assert headers["webhook-signature"].startswith("v1,")


def test_a_changed_body_id_or_timestamp_fails_verification() -> None:
    batch = rows(5)
    body = envelope.batch_body(batch)
    key = signing.parse_secret(SECRET)
    now = int(time.time())
    good = signing.headers(key, signing.message_id(batch, body), now, body)
    for tampered_body, headers in (
        (body.replace(b"succeeded", b"failed"), good),
        (body, {**good, "webhook-id": "msg_other"}),
        (body, {**good, "webhook-timestamp": str(now + 1)}),
    ):
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(tampered_body, headers)
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, good)


def test_the_signature_is_hmac_sha256_over_id_timestamp_body() -> None:
    # A fixed vector, worked out by hand from the specification's definition.
    import hashlib
    import hmac

    key = b"k" * 24
    expected = base64.b64encode(
        hmac.new(key, b"msg_1.1674087231.{}", hashlib.sha256).digest()
    ).decode()
    assert signing.sign(key, "msg_1", 1674087231, b"{}") == f"v1,{expected}"


def test_message_ids_are_stable_per_batch_and_never_contain_a_dot() -> None:
    batch = rows(10, 11)
    body = envelope.batch_body(batch)
    first = signing.message_id(batch, body)
    assert first == signing.message_id(batch, envelope.batch_body(rows(10, 11)))
    assert first != signing.message_id(rows(10, 12), envelope.batch_body(rows(10, 12)))
    assert "." not in first and first.startswith("msg_10-11_")


def test_secrets_with_or_without_prefix_unpadded_too() -> None:
    assert signing.parse_secret(SECRET) == KEY
    assert signing.parse_secret(SECRET.removeprefix("whsec_")) == KEY
    assert signing.parse_secret(SECRET.rstrip("=")) == KEY


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("whsec_", "is empty"),
        ("whsec_not base64!!", "is not whsec_ followed by base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "5-byte key"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "65-byte key"),
    ],
)
def test_bad_secrets_say_what_is_wrong_without_the_value(secret: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        signing.parse_secret(secret)
    assert secret.removeprefix("whsec_") not in str(caught.value) or not secret.removeprefix(
        "whsec_"
    )


def test_load_key_errors_are_one_line_config_errors() -> None:
    for env, problem in (
        ({}, "is not set"),
        ({"HOOK": "  "}, "is empty"),
        ({"HOOK": "whsec_%%%"}, "not whsec_ followed by base64"),
    ):
        with pytest.raises(ConfigError) as caught:
            signing.load_key("siem", "HOOK", env)
        message = str(caught.value)
        assert message.startswith("[[sink]] siem: secret_env HOOK: ") and problem in message
        assert "\n" not in message and "%%%" not in message
    assert signing.load_key("siem", "HOOK", {"HOOK": SECRET}) == (KEY, SECRET)


def test_the_readme_verification_snippet_verifies_our_deliveries() -> None:
    from helpers import readme_verify

    verify = readme_verify()
    batch = rows(7, 8)
    body = envelope.batch_body(batch)
    headers = signing.headers(
        signing.parse_secret(SECRET), signing.message_id(batch, body), int(time.time()), body
    )
    assert [e["id"] for e in verify(SECRET, headers, body)] == [7, 8]  # type: ignore[operator]
    with pytest.raises(ValueError, match="no valid signature"):
        verify(SECRET, headers, body + b" ")  # type: ignore[operator]
