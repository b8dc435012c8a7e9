"""Target management: CSV import (streamed, batched, idempotent), add, remove, list."""

from __future__ import annotations

import codecs
import csv
import unicodedata
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from audit_job.commands.database import open_database
from audit_job.config import Settings
from audit_job.errors import ConfigError
from audit_job.policy import EXPECT_PROBLEM, PolicySet, parse_expect
from audit_job.store import targets as store
from audit_job.store.tables import ID_LENGTH

IMPORT_BATCH = 2000
MAX_LINE_BYTES = 4096  # two 255-character ids in UTF-8 fit with room to spare
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


@dataclass(frozen=True, slots=True)
class Rejected:
    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    app_id: str
    user_id: str
    enabled: bool | None
    expect: str | None = None  # None: unchanged (new pairs: any)


@dataclass
class ImportSummary:
    read: int = 0
    added: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejections: list[Rejected] = field(default_factory=list)  # the first few, for display
    total_after: int = 0


def validate_id(name: str, value: str) -> str | None:
    """Why `value` cannot be an app or user id, or None when it can."""
    if not value:
        return f"empty {name}"
    if len(value) > ID_LENGTH:
        return f"{name} longer than {ID_LENGTH} characters ({len(value)})"
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") and char not in "\u200d":
            return f"{name} contains a control character (U+{ord(char):04X})"
    return None


def _lines(stream: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes without EOL), or None for a line too long to be a pair; a
    giant line is skipped without ever holding it whole in memory."""
    number = 0
    while True:
        chunk = stream.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            return
        number += 1
        if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
            while chunk and not chunk.endswith(b"\n"):
                chunk = stream.readline(1 << 16)
            yield number, None
            continue
        yield number, chunk.rstrip(b"\r\n")


def parse_csv(stream: BinaryIO, name: str = "-") -> Iterator[Row | Rejected]:
    """Rows of a `app_id,user_id[,enabled][,expect]` CSV, each valid or rejected with its
    line. An empty `enabled` or `expect` cell leaves the pair's value as it is."""
    lines = _lines(stream)
    header: list[str] | None = None
    header_line = 1
    for number, raw in lines:
        if raw is None:
            raise ConfigError(f"{name}: line {number}: header line too long")
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in raw:
            # A UTF-16 export (Excel "Unicode text") used to end in an internal csv.Error.
            raise ConfigError(
                f"{name}: line {number}: not UTF-8 text (UTF-16 or binary?); save it as UTF-8"
            )
        text = raw.decode("utf-8", errors="replace").lstrip("\ufeff").strip()
        if not text:
            continue
        try:
            header = [h.strip().lower() for h in next(csv.reader([text], strict=True))]
        except csv.Error as exc:
            raise ConfigError(f"{name}: line {number}: malformed CSV header ({exc})") from None
        header_line = number
        break
    if header is None:
        raise ConfigError(f"{name}: empty file: expected a header line 'app_id,user_id'")
    if "app_id" not in header or "user_id" not in header:
        raise ConfigError(
            f"{name}: line {header_line}: header must name app_id and user_id "
            f"(got {','.join(header)!r})"
        )
    app_at, user_at = header.index("app_id"), header.index("user_id")
    enabled_at = header.index("enabled") if "enabled" in header else None
    expect_at = header.index("expect") if "expect" in header else None
    width = max(app_at, user_at) + 1  # a missing trailing `enabled` means "unchanged"
    for number, raw in lines:
        if raw is None:
            yield Rejected(number, f"line longer than {MAX_LINE_BYTES} bytes")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Rejected(number, f"not valid UTF-8 (byte {exc.start + 1})")
            continue
        if not text.strip():
            continue
        if "\x00" in text:
            yield Rejected(number, "contains a NUL byte")
            continue
        try:
            fields = next(csv.reader([text], strict=True))
        except csv.Error as exc:
            yield Rejected(number, f"malformed CSV ({exc})")
            continue
        if len(fields) < width:
            missing = [h for i, h in enumerate(header[:width]) if i >= len(fields)]
            yield Rejected(number, f"missing column {', '.join(missing)}")
            continue
        app_id, user_id = fields[app_at].strip(), fields[user_at].strip()
        problem = validate_id("app_id", app_id) or validate_id("user_id", user_id)
        if problem:
            yield Rejected(number, problem)
            continue
        enabled: bool | None = None
        if enabled_at is not None and enabled_at < len(fields):
            flag = fields[enabled_at].strip().lower()
            if flag in _TRUE:
                enabled = True
            elif flag in _FALSE:
                enabled = False
            elif flag:
                yield Rejected(number, f"enabled must be true or false, got {flag[:20]!r}")
                continue
        expect: str | None = None
        if expect_at is not None and expect_at < len(fields):
            try:
                expect = parse_expect(fields[expect_at])
            except ValueError:
                cell = fields[expect_at].strip()[:20]
                yield Rejected(number, f"{EXPECT_PROBLEM}, got {cell!r}")
                continue
        yield Row(number, app_id, user_id, enabled, expect)


async def import_csv(
    settings: Settings, stream: BinaryIO, name: str, *, keep_rejections: int = 100
) -> ImportSummary:
    summary = ImportSummary()
    async with open_database(settings) as engine:
        async with engine.connect() as conn:
            before = await store.count(conn)
        batch: dict[tuple[str, str], tuple[bool | None, str | None]] = {}
        for item in parse_csv(stream, name):
            if isinstance(item, Rejected):
                summary.rejected += 1
                if len(summary.rejections) < keep_rejections:
                    summary.rejections.append(item)
                continue
            summary.read += 1
            key = (item.app_id, item.user_id)
            enabled, expect = batch.get(key, (None, None))
            # duplicates collapse; for each column the last explicit value wins
            batch[key] = (
                item.enabled if item.enabled is not None else enabled,
                item.expect if item.expect is not None else expect,
            )
            if len(batch) >= IMPORT_BATCH:
                await _save(engine, batch)
        await _save(engine, batch)
        async with engine.connect() as conn:
            summary.total_after = await store.count(conn)
    summary.added = summary.total_after - before
    summary.unchanged = summary.read - summary.added
    return summary


async def _save(engine, batch: dict[tuple[str, str], tuple[bool | None, str | None]]) -> None:  # type: ignore[no-untyped-def]
    if not batch:
        return
    rows = [(app, user, enabled, expect) for (app, user), (enabled, expect) in batch.items()]
    async with engine.begin() as conn:  # one transaction a batch: all of it or none
        await store.save_batch(conn, rows)
    batch.clear()


def _check_ids(app_id: str, user_id: str | None) -> None:
    problem = validate_id("app_id", app_id) or (
        validate_id("user_id", user_id) if user_id is not None else None
    )
    if problem:
        raise ConfigError(problem)


async def add(settings: Settings, app_id: str, user_id: str) -> str:
    """'added', 'enabled' (it existed disabled) or 'exists'."""
    _check_ids(app_id, user_id)
    async with open_database(settings) as engine, engine.begin() as conn:
        existing = await store.get_enabled(conn, app_id, user_id)
        await store.save_batch(conn, [(app_id, user_id, True)])
    return "added" if existing is None else ("exists" if existing else "enabled")


async def remove(settings: Settings, app_id: str, user_id: str) -> bool:
    async with open_database(settings) as engine, engine.begin() as conn:
        return await store.remove(conn, app_id, user_id)


async def set_enabled(settings: Settings, app_id: str, user_id: str | None, enabled: bool) -> int:
    _check_ids(app_id, user_id)
    async with open_database(settings) as engine, engine.begin() as conn:
        return await store.set_enabled(conn, app_id, user_id, enabled)


async def set_expect(settings: Settings, app_id: str, user_id: str | None, expect: str) -> int:
    """`targets expect`: a pair's (or a whole app's) own expectation; how many changed."""
    _check_ids(app_id, user_id)
    try:
        value = parse_expect(expect) or ""
    except ValueError:
        value = ""
    if not value:
        raise ConfigError(f"{EXPECT_PROBLEM}, got {expect[:20]!r}")
    async with open_database(settings) as engine, engine.begin() as conn:
        return await store.set_expect(conn, app_id, user_id, value)


async def count(settings: Settings, app_id: str | None = None) -> dict[str, int]:
    async with open_database(settings) as engine, engine.connect() as conn:
        return {
            "targets": await store.count(conn, app_id=app_id),
            "enabled": await store.count(conn, app_id=app_id, enabled_only=True),
        }


async def listing(
    settings: Settings, app_id: str | None = None, user_id: str | None = None
) -> AsyncIterator[dict[str, object]]:
    """Targets with their own `expect` and the `effective_expect` that policies give them."""
    policies = PolicySet(settings.policy)
    async with open_database(settings) as engine:
        async for row in store.stream(engine, app_id=app_id, user_id=user_id):
            effective = policies.effective(
                str(row["app_id"]), str(row["user_id"]), str(row["expect"])
            )
            row["effective_expect"] = effective.expect
            row["severity"] = effective.severity
            row["expect_source"] = effective.source
            yield row
