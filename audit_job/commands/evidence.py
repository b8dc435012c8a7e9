"""Evidence bundles: one reproducible archive per run, keys to sign them, offline checks.

A bundle is made from the database and checked against the digest the run's link
recorded when it ended, so a bundle of a run changed since then is refused, not written.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_job import __version__
from audit_job.commands.database import open_database
from audit_job.config import Settings
from audit_job.errors import ConfigError, EvidenceMismatch, NotFound
from audit_job.evidence import archive, canonical
from audit_job.evidence import files as f
from audit_job.evidence.manifest import (
    MANIFEST,
    SIGNATURE,
    SUMS,
    describe_files,
    manifest_document,
    sums_document,
)
from audit_job.evidence.readme import readme_text
from audit_job.models import RunStatus
from audit_job.store import evidence as store
from audit_job.store import evidence_feed
from audit_job.store.evidence_rows import check_pages
from audit_job.store.schema import HEAD_REVISION
from audit_job.store.tables import audit_chain

log = logging.getLogger(__name__)
Report = Callable[[str], None]
SLOT_STATUSES = (RunStatus.SKIPPED_OVERLAP.value, RunStatus.MISSED.value)
BUNDLE_PATTERN = "audit-job-run-*.tar.gz"


@dataclass(frozen=True)
class BundleResult:
    path: Path
    run_id: int
    status: str
    checks: int
    digest: str
    seq: int
    files: list[str]
    key_fingerprint: str | None


async def resolve_run(conn: AsyncConnection, ref: str) -> int:
    """A run id, or `latest`: the run of the newest link that is an audit (not a slot)."""
    if ref == "latest":
        stmt = (
            select(audit_chain.c.run_id)
            .where(audit_chain.c.status.notin_(SLOT_STATUSES))
            .order_by(audit_chain.c.seq.desc())
            .limit(1)
        )
        run_id = (await conn.execute(stmt)).scalar_one_or_none()
        if run_id is None:
            raise NotFound("no run has ended with a digest yet")
        return int(run_id)
    if not ref.isdigit():
        raise ConfigError(f"RUN: must be a run id or 'latest', got {ref!r}")
    return int(ref)


async def _write_rows(
    conn: AsyncConnection, run_id: int, folder: Path, header: bytes
) -> tuple[str, int]:
    """run.json, results.jsonl, results.csv and snapshot.csv in one pass over the rows;
    the run's digest and how many rows it has."""
    (folder / f.RUN_JSON).write_bytes(header)
    digest = hashlib.sha256(header)
    rows = 0
    with (
        (folder / f.RESULTS).open("wb") as jsonl,
        (folder / f.RESULTS_CSV).open("w", encoding="utf-8", newline="") as results_csv,
        (folder / f.SNAPSHOT).open("w", encoding="utf-8", newline="") as snapshot_csv,
    ):
        results = csv.writer(results_csv, lineterminator=f.CSV_LINE_END)
        snapshot = csv.writer(snapshot_csv, lineterminator=f.CSV_LINE_END)
        results.writerow(canonical.CHECK_FIELDS)
        snapshot.writerow(f.SNAPSHOT_HEADER)
        async for page in check_pages(conn, run_id):
            data = "".join(map(canonical.check_line, page)).encode("utf-8")
            digest.update(data)
            jsonl.write(data)
            results.writerows([f.csv_value(v) for v in row] for row in page)
            snapshot.writerows((row[0], row[1]) for row in page)
            rows += len(page)
    return digest.hexdigest(), rows


async def _feed_sections(conn: AsyncConnection, run_id: int, folder: Path) -> list[str]:
    """violations.csv and events.jsonl, each written when the run has any."""
    written = []
    rows = [row async for row in evidence_feed.run_violations(conn, run_id)]
    if rows:
        with (folder / f.VIOLATIONS).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator=f.CSV_LINE_END)
            writer.writerow(evidence_feed.VIOLATION_COLUMNS)
            for row in rows:
                writer.writerow(
                    [f.csv_value(_plain(row[name])) for name in evidence_feed.VIOLATION_COLUMNS]
                )
        written.append(f.VIOLATIONS)
    count = 0
    with (folder / f.EVENTS).open("w", encoding="utf-8", newline="") as handle:
        async for event in evidence_feed.run_events(conn, run_id):
            event = {name: _plain(value) for name, value in event.items()}
            event["payload"] = json.loads(event["payload"])  # the object, not its text
            handle.write(canonical.line(event).decode())
            count += 1
    if count:
        written.append(f.EVENTS)
    else:
        (folder / f.EVENTS).unlink()
    return written


def _plain(value: Any) -> Any:
    return canonical.format_time(value) if hasattr(value, "tzinfo") else value


async def bundle_run(
    engine: AsyncEngine, ref: str, out: Path, sign_key: Path | None = None
) -> BundleResult:
    """Write the bundle of run `ref` (an id or `latest`) to `out` (.tar.gz or .zip)."""
    archive.archive_kind(out)
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist")
    key = None
    if sign_key is not None:
        from audit_job.evidence import keys

        key = keys.load_private(sign_key)
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # one snapshot for the header and the rows
            await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            run_id = await resolve_run(conn, ref)
            run, link, prev = await _sealed_run(conn, run_id)
            header = store.header_line(run, link.seq, prev)
            with tempfile.TemporaryDirectory(prefix=".audit-job-bundle-", dir=out.parent) as tmp:
                folder = Path(tmp)
                digest, rows = await _write_rows(conn, run_id, folder, header)
                if digest != link.digest:
                    raise EvidenceMismatch(
                        f"run {run_id}: its rows no longer give the digest recorded when it "
                        f"ended ({link.digest}, now {digest}): the database was changed; "
                        "see: audit-job verify --db"
                    )
                config = b"null\n"
                if run["config_digest"] is not None:
                    body = await store.config_body(conn, run["config_digest"])
                    if body is None or canonical.sha256_hex(body) != run["config_digest"]:
                        raise EvidenceMismatch(
                            f"run {run_id}: its configuration {run['config_digest']} is "
                            "missing from audit_config or was changed"
                        )
                    config = body
                extra = await _feed_sections(conn, run_id, folder)
                names = _write_documents(folder, run, link, prev, digest, config, extra, key)
                mtime = int(run["finished_at"].timestamp()) if run["finished_at"] else 0
                files = [(name, folder / name) for name in names]
                await asyncio.to_thread(archive.write_archive, out, files, mtime)
    return BundleResult(
        out,
        run_id,
        run["status"],
        rows,
        digest,
        link.seq,
        sorted(names),
        None if key is None else _fingerprint(key),
    )


def _fingerprint(key: Any) -> str:
    from audit_job.evidence import keys

    return keys.fingerprint(key.public_key())


async def _sealed_run(
    conn: AsyncConnection, run_id: int
) -> tuple[dict[str, Any], store.Link, store.Link | None]:
    run = await store.run_row(conn, run_id)
    if run is None:
        raise NotFound(f"no run {run_id}")
    link = await store.latest_link(conn, run_id)
    if link is None:
        if run["status"] in {s.value for s in store.SEALED}:
            why = "it ended before evidence was recorded (schema revision 0009)"
        else:
            why = f"it is {run['status']}; a run gets its digest when it ends"
        raise EvidenceMismatch(f"run {run_id} has no digest: {why}")
    if run["pruned_at"] is not None:
        raise EvidenceMismatch(
            f"run {run_id}: its checks were pruned at {canonical.format_time(run['pruned_at'])}; "
            "a bundle needs them (its digest and links stay: audit-job verify --db)"
        )
    if run["status"] != link.status:
        raise EvidenceMismatch(
            f"run {run_id} is {run['status']} since its last link ({link.status}, link "
            f"{link.seq}); bundle it once it ends"
        )
    prev = await store.link_at(conn, link.seq - 1) if link.seq > 1 else None
    if link.seq > 1 and (prev is None or prev.digest != link.prev_digest):
        raise EvidenceMismatch(
            f"run {run_id}: the chain is broken before link {link.seq}; see: audit-job verify --db"
        )
    return run, link, prev


def _write_documents(
    folder: Path,
    run: dict[str, Any],
    link: store.Link,
    prev: store.Link | None,
    digest: str,
    config: bytes,
    extra: list[str],
    key: Any | None,
) -> list[str]:
    """config, chain, version, README, manifest, SHA256SUMS (and the signature): the
    names of every file to archive."""
    header = canonical.run_header(
        run, link.seq, prev.run_id if prev else None, prev.digest if prev else None
    )
    (folder / f.CONFIG).write_bytes(config)
    (folder / f.CHAIN).write_bytes(
        f.chain_document(
            link.run_id,
            link.seq,
            link.status,
            digest,
            prev.run_id if prev else None,
            link.prev_digest,
            canonical.format_time(link.sealed_at),
        )
    )
    (folder / f.VERSION).write_bytes(f.version_document(__version__, HEAD_REVISION))
    listed = [*f.REQUIRED, *extra]
    (folder / f.README).write_bytes(readme_text(header, digest, [*listed, *_signed(key)]))
    described = describe_files(folder, listed)
    manifest = manifest_document(run["id"], digest, described)
    (folder / MANIFEST).write_bytes(manifest)
    sums = [(d["name"], d["sha256"]) for d in described]
    sums.append((MANIFEST, canonical.sha256_hex(manifest)))
    (folder / SUMS).write_bytes(sums_document(sums))
    names = [*listed, MANIFEST, SUMS]
    if key is not None:
        from audit_job.evidence import keys

        (folder / SIGNATURE).write_bytes(keys.signature_document(key, manifest))
        names.append(SIGNATURE)
    return names


def _signed(key: Any | None) -> list[str]:
    return [] if key is None else [SIGNATURE]


async def make_bundle(
    settings: Settings, ref: str, out: Path, sign_key: Path | None = None
) -> BundleResult:
    async with open_database(settings) as engine:
        return await bundle_run(engine, ref, out, sign_key)


def keygen(prefix: str) -> tuple[Path, Path, str]:
    from audit_job.evidence import keys

    return keys.generate(prefix)


def verify_bundles(paths: list[Path], report: Report, public_key: Path | None = None) -> list[Any]:
    """Check each bundle offline (and, with several, their links to each other)."""
    from audit_job.evidence.verify import check_links, verify_folder

    key = None
    if public_key is not None:
        from audit_job.evidence import keys

        key = keys.load_public(public_key)
    facts = []
    for path in paths:
        report(f"{path}:")
        with tempfile.TemporaryDirectory(prefix="audit-job-verify-") as tmp:
            names = archive.extract(path, Path(tmp))
            try:
                facts.append(verify_folder(Path(tmp), names, report, key))
            except EvidenceMismatch as exc:
                raise EvidenceMismatch(f"{path}: {exc}") from None
    if len(facts) > 1:
        check_links(facts, report)
    return facts


async def write_scheduled_bundle(
    settings: Settings, engine: AsyncEngine, run_id: int
) -> Path | None:
    """The daemon's bundle of a run that just ended, into `[evidence] dir` (keeping the
    newest `keep`), signed with `sign_key` when set. Never raises: a bundle that cannot be
    written is logged, and the schedule goes on."""
    options = settings.evidence
    if options.dir is None:
        return None
    folder, out, key = _scheduled_paths(options.dir, options.sign_key, run_id)
    try:
        async with engine.connect() as conn:
            link = await store.latest_link(conn, run_id)
        if link is None:
            log.info("run %d has no digest (not ended): no bundle", run_id)
            return None
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        result = await bundle_run(engine, str(run_id), out, key)
        removed = keep_newest(folder, options.keep)
    except Exception as exc:
        log.error(
            "evidence bundle of run %d not written: %s", run_id, exc, extra={"event": "evidence"}
        )
        return None
    log.info(
        "wrote %s (run %d, digest %s)%s",
        out,
        run_id,
        result.digest,
        f"; removed {removed} older bundles" if removed else "",
        extra={"event": "evidence_bundle"},
    )
    return out


def _scheduled_paths(
    folder: str, sign_key: str | None, run_id: int
) -> tuple[Path, Path, Path | None]:
    where = Path(folder).expanduser()
    key = Path(sign_key).expanduser() if sign_key else None
    return where, where / f"audit-job-run-{run_id:08d}.tar.gz", key


def keep_newest(folder: Path, keep: int | None) -> int:
    """Delete all but the newest `keep` scheduled bundles (names sort by run id)."""
    if keep is None:
        return 0
    bundles = sorted(folder.glob(BUNDLE_PATTERN))
    old = bundles[:-keep] if len(bundles) > keep else []
    for path in old:
        path.unlink(missing_ok=True)
    return len(old)
