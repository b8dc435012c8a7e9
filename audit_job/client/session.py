"""How the client connects: one aiohttp session per client, its connector (pool size, DNS
cache) and TLS settings (verify by default, trust a CA bundle, or, with a warning, verify
nothing)."""

from __future__ import annotations

import logging
import ssl

import aiohttp

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


def new_session(authing: AuthingSettings, concurrency: int) -> aiohttp.ClientSession:
    """The session of one client: at most `concurrency` connections open at once."""
    connector = aiohttp.TCPConnector(
        limit=concurrency, limit_per_host=0, ssl=ssl_setting(authing), ttl_dns_cache=300
    )
    # No aiohttp timeouts: the client's DeadlineWatch limits every attempt (connect included).
    # No cookie jar: the API sets none.
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(),
        raise_for_status=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )
