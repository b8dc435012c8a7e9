"""The effective configuration as evidence: every setting that shaped a run, no secret.

Secrets are dropped, not masked, so nothing derived from them (not even their length)
reaches a bundle:
- every field typed `SecretStr` in any section (today `[authing] access_key_secret`; a
  future webhook secret typed so is dropped with no change here);
- the password, and query parameters that look like credentials, of the URL keys in
  URL_KEYS;
- whatever DROPPED_KEYS names (secret-bearing keys that are not SecretStr, e.g. a webhook
  URL whose path is the secret: add them here when they are added to the settings).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, SecretStr

from audit_job.config import Settings
from audit_job.evidence.canonical import line, sha256_hex

# (section, key) whose value is a URL that may hold a password.
URL_KEYS = (("database", "url"), ("source", "url"))
# (section, key) removed outright.
DROPPED_KEYS: tuple[tuple[str, str], ...] = ()
_CREDENTIAL_PARAM = re.compile(r"pass|secret|token|key", re.IGNORECASE)


def _is_secret(model: type[BaseModel], name: str) -> bool:
    annotation = model.model_fields[name].annotation
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


def strip_url_credentials(url: str) -> str:
    """The URL without its password and without query parameters that look like one."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return re.sub(r"(://[^:/@]*):[^@]*@", r"\1@", url.split("?", 1)[0])
    query = {k: v for k, v in parsed.query.items() if not _CREDENTIAL_PARAM.search(k)}
    # URL.set() reads password=None as "leave it": replace the field itself.
    return parsed._replace(password=None).set(query=query).render_as_string(hide_password=False)


def evidence_config(settings: Settings) -> dict[str, Any]:
    """Plain data: the effective settings with every secret removed."""
    data = settings.model_dump(mode="json")
    for section_name, field in Settings.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for key in list(data[section_name]):
            if _is_secret(model, key):
                del data[section_name][key]
    for section_name, key in DROPPED_KEYS:
        data.get(section_name, {}).pop(key, None)
    for section_name, key in URL_KEYS:
        value = data.get(section_name, {}).get(key)
        if isinstance(value, str):
            data[section_name][key] = strip_url_credentials(value)
    return data


def config_document(settings: Settings) -> tuple[bytes, str]:
    """config.json (one canonical JSON line) and its SHA-256."""
    body = line(evidence_config(settings))
    return body, sha256_hex(body)
