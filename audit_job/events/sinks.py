"""The sinks: where a batch of events goes, one attempt at a time.

`send(rows)` returns when the batch is durably accepted (a webhook's 2xx, a file's fsync)
and raises `Transient` (try again later) or `Permanent` (stop this sink until an operator
runs `audit-job events retry NAME`) otherwise. Retrying is the deliverer's job.

Webhook answers: 2xx accepted; 408, 429, 5xx, timeouts and connection errors transient
(`Retry-After` honoured); any other status permanent, redirects included (they are never
followed: the URL needs fixing), and so is a TLS certificate that fails verification.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import aiohttp
import orjson

from audit_job import __version__, logs
from audit_job.config import JsonlSinkSettings, WebhookSinkSettings
from audit_job.config.sinks import EVENT_TYPES, MASK, mask_webhook_url, url_secrets
from audit_job.errors import ConfigError
from audit_job.events import envelope, signing
from audit_job.retry import parse_retry_after
from audit_job.store.events import EventRow

log = logging.getLogger(__name__)
BODY_SNIPPET = 200  # characters of a refusing receiver's answer kept for the operator
TAIL_BYTES = 1 << 16  # how far back the jsonl sink looks for its last complete line


class DeliveryError(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class Transient(DeliveryError):
    """Try the same batch again later."""


class Permanent(DeliveryError):
    """The receiver refused the batch for good: the sink stops."""


class Sink(Protocol):
    name: str
    kind: str
    batch_size: int
    max_attempts: int
    event_types: frozenset[str] | None  # None: every type

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def send(self, rows: Sequence[EventRow]) -> None: ...


def _event_types(types: frozenset[str]) -> frozenset[str] | None:
    return None if types >= frozenset(EVENT_TYPES) else types


def _ssl(settings: WebhookSinkSettings) -> ssl.SSLContext | bool:
    """Verified like the API's connection: the system store, a CA bundle, or off."""
    if not settings.url.startswith("https://"):
        return True
    if not settings.verify_tls:
        log.warning(
            "[[sink]] %s: verify_tls = false: the webhook's TLS certificate is NOT verified",
            settings.name,
            extra={"event": "tls_unverified"},
        )
        return False
    if settings.ca_bundle:
        try:
            return ssl.create_default_context(cafile=settings.ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"[[sink]] {settings.name}: ca_bundle: cannot load {settings.ca_bundle!r}: {exc}"
            ) from None
    return True


class WebhookSink:
    kind = "webhook"

    def __init__(
        self,
        settings: WebhookSinkSettings,
        key: bytes,
        secret_text: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = settings.name
        self.batch_size = settings.batch_size
        self.max_attempts = settings.max_attempts
        self.event_types = _event_types(settings.event_types)
        self.url = settings.url
        self.shown_url = mask_webhook_url(settings.url)
        self._settings = settings
        self._key = key
        self._clock = clock
        self._secrets = [s for s in [*url_secrets(settings.url), secret_text] if len(s) >= 4]
        for secret in self._secrets:
            logs.register_secret(secret)
        self._session: aiohttp.ClientSession | None = None

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return logs.redact(text)

    async def open(self) -> None:
        timeout = aiohttp.ClientTimeout(
            total=self._settings.timeout_seconds, connect=self._settings.timeout_seconds
        )
        connector = aiohttp.TCPConnector(limit=2, ssl=_ssl(self._settings))
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers={"User-Agent": f"audit-job/{__version__}"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, rows: Sequence[EventRow]) -> None:
        assert self._session is not None, "open() first"
        body = envelope.batch_body(rows)
        message = signing.message_id(rows, body)
        sent_at = int(self._clock())
        headers = {
            **signing.headers(self._key, message, sent_at, body),
            "Content-Type": "application/json",
        }
        try:
            async with self._session.post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    await response.read()
                    return
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                text = await self._snippet(response)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise Permanent(
                self.redact(f"TLS certificate rejected ({exc.certificate_error}); set ca_bundle")
            ) from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise Transient(f"no answer within {self._settings.timeout_seconds:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise Transient(self.redact(f"{type(exc).__name__}: {exc}")) from None
        detail = f"HTTP {status}" + (f": {text}" if text else "")
        if status in (408, 429) or status >= 500:
            raise Transient(self.redact(detail), retry_after)
        raise Permanent(self.redact(detail))

    async def _snippet(self, response: aiohttp.ClientResponse) -> str:
        try:
            raw = await response.content.read(BODY_SNIPPET * 4)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return ""
        text = raw.decode("utf-8", errors="replace")[:BODY_SNIPPET]
        return " ".join("".join(c if c.isprintable() else " " for c in text).split())


class JsonlSink:
    """An append-only file, one event per line, flushed and fsynced per batch.

    After a crash the file may end with a torn line (cut off before its newline) and may
    already hold the batch that was written but not yet recorded as delivered: the torn
    tail is cut off and events up to the last complete line's id are not written again,
    so the file holds each event once."""

    kind = "jsonl"
    max_attempts = 5

    def __init__(self, settings: JsonlSinkSettings) -> None:
        self.name = settings.name
        self.batch_size = settings.batch_size
        self.event_types = _event_types(settings.event_types)
        self.path = Path(settings.path).expanduser()
        self._last_written: int | None = None

    def redact(self, text: str) -> str:
        return logs.redact(text)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, rows: Sequence[EventRow]) -> None:
        try:
            await asyncio.to_thread(self._append, rows)
        except OSError as exc:
            raise Transient(f"{self.path}: {exc.strerror or exc}") from None

    def _append(self, rows: Sequence[EventRow]) -> None:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if self._last_written is None:
                self._last_written = self._repair_tail(fd)
            data = b"".join(envelope.line(r) for r in rows if r.id > self._last_written)
            if data:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            os.fsync(fd)
            self._last_written = max(self._last_written, rows[-1].id)
        finally:
            os.close(fd)
        if created:  # the new file's name must survive a crash too
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _repair_tail(self, fd: int) -> int:
        """Cut a torn last line; the id of the last complete one (0 for none)."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0
        start = max(0, size - TAIL_BYTES)
        tail = os.pread(fd, size - start, start)
        end = tail.rfind(b"\n")
        if end != len(tail) - 1 and (end >= 0 or start == 0):  # torn: back to the last newline
            os.ftruncate(fd, start + end + 1 if end >= 0 else start)
            os.fsync(fd)
            log.warning(
                "%s: cut off a torn last line (%d bytes) left by an interrupted write",
                self.path,
                len(tail) - end - 1,
                extra={"event": "jsonl_torn_tail"},
            )
            tail = tail[: end + 1] if end >= 0 else b""
        lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
        last = lines[-1] if lines and lines[-1] else b""
        try:
            return int(orjson.loads(last)["id"]) if last else 0
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return 0
