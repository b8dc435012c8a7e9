"""TLS settings of the client's connector: verify by default, trust a CA bundle, or (with a
warning) verify nothing."""

from __future__ import annotations

import logging
import ssl

from audit_job.config import AuthingSettings
from audit_job.errors import ConfigError

log = logging.getLogger(__name__)


def ssl_setting(authing: AuthingSettings) -> ssl.SSLContext | bool:
    """What the connector verifies with: on by default, a CA bundle, or off (with a warning)."""
    if not authing.verify_tls:
        log.warning(
            "[authing] verify_tls = false: TLS certificates of %s are NOT verified",
            authing.host,
            extra={"event": "tls_unverified"},
        )
        return False
    if authing.ca_bundle:
        try:
            return ssl.create_default_context(cafile=authing.ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"[authing] ca_bundle: cannot load {authing.ca_bundle!r}: {exc}"
            ) from None
    return True
