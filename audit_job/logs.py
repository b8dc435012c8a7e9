"""Logging: text or JSON lines on stderr, every record of a run tagged with its run id.

Secrets are kept out at the source (they are never formatted into messages); the
redaction filter below is a second line of defence for anything that slips through,
e.g. a library logging a full header.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime

current_run_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "current_run_id", default=None
)

_SECRET_PATTERNS = [
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(bearer\s+|authing\s+)?[^\s'\",}]+"),
    re.compile(r"(?i)(access_?key_?secret['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"),
    re.compile(r"(?i)(access_token['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"),
    re.compile(r"(eyJ[\w-]{4,}\.)[\w-]+\.[\w-]+"),  # anything shaped like a JWT
]
_registered_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Make sure `value` is masked if it ever reaches a log line."""
    if value and len(value) >= 4:
        _registered_secrets.add(value)


def redact(text: str) -> str:
    for secret in _registered_secrets:
        if secret in text:
            text = text.replace(secret, "********")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "********", text)
    return text


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = current_run_id.get()
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        run = f" run={record.run_id}" if getattr(record, "run_id", None) else ""
        line = f"{stamp} {record.levelname:<7} {record.name}{run}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None),
            "run_id": getattr(record, "run_id", None),
            "message": record.getMessage(),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(payload, ensure_ascii=False, default=str))


def setup(*, verbose: bool = False, fmt: str = "text", file: str | None = None) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler: logging.Handler = (
        logging.FileHandler(file, encoding="utf-8") if file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("aiosqlite", "asyncio", "apscheduler.executors.default", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # asyncmy logs every server warning of a statement, e.g. each duplicate an
    # INSERT IGNORE skipped on purpose (store/dialect.py), with the row's key.
    logging.getLogger("asyncmy").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.INFO if verbose else logging.WARNING)
