"""Verify a bundle offline: no database, no configuration.

Each check reports one line when it holds; the first that does not raises
EvidenceMismatch naming the file, the line or the check. In order: the manifest and the
signature, every file's size and SHA-256 (manifest.json, SHA256SUMS), run.json and
config.json in canonical form with the configuration's digest, the run's digest against
chain.json, then results.jsonl line by line against run.json's counts, results.csv and
snapshot.csv.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit_job.errors import EvidenceMismatch
from audit_job.evidence import canonical
from audit_job.evidence import files as f
from audit_job.evidence.manifest import (
    MANIFEST,
    NOT_LISTED,
    SIGNATURE,
    SUMS,
    file_sha256,
    parse_sums,
)
from audit_job.models import CheckStatus

Report = Callable[[str], None]
_ACTIVE_BY_STATUS = {"active": True, "inactive": False, "error": None, "pending": None}
_STATUSES = frozenset(s.value for s in CheckStatus)
_TEXT, _TEXT_OR_NULL = (str,), (str, type(None))
_INT, _INT_OR_NULL = (int,), (int, type(None))
_TYPES = {
    "app_id": _TEXT,
    "user_id": _TEXT,
    "status": _TEXT,
    "active": (bool, type(None)),
    "checked_at": _TEXT_OR_NULL,
    "attempts": _INT,
    "http_status": _INT_OR_NULL,
    "status_code": _INT_OR_NULL,
    "api_code": _INT_OR_NULL,
    "message": _TEXT_OR_NULL,
    "request_id": _TEXT_OR_NULL,
    "latency_ms": _INT_OR_NULL,
}
_TYPE_NAMES = {
    _TEXT: "text",
    _TEXT_OR_NULL: "text or null",
    _INT: "an integer",
    _INT_OR_NULL: "an integer or null",
    (bool, type(None)): "true, false or null",
}


@dataclass(frozen=True)
class BundleFacts:
    """What a valid bundle says about its place in the chain."""

    run_id: int
    seq: int
    digest: str
    prev_run_id: int | None
    prev_digest: str | None


def _fail(message: str) -> EvidenceMismatch:
    return EvidenceMismatch(message)


def _json_file(folder: Path, name: str) -> Any:
    data = (folder / name).read_bytes()
    try:
        return json.loads(data)
    except ValueError as exc:
        raise _fail(f"{name}: not valid JSON ({exc})") from None


def _canonical_line(folder: Path, name: str) -> tuple[bytes, Any]:
    data = (folder / name).read_bytes()
    if data.count(b"\n") != 1 or not data.endswith(b"\n"):
        raise _fail(f"{name}: must be exactly one line ending in a newline")
    try:
        value = json.loads(data)
        canonical_form = canonical.line(value)
    except (ValueError, TypeError) as exc:
        raise _fail(f"{name}: not valid JSON ({exc})") from None
    if canonical_form != data:
        raise _fail(f"{name}: not in canonical form (keys sorted, no spaces, UTF-8)")
    return data, value


def verify_folder(
    folder: Path, names: list[str], report: Report, public_key: Any | None = None
) -> BundleFacts:
    """Check an unpacked bundle; `public_key` an Ed25519PublicKey or None."""
    present = set(names)
    if MANIFEST not in present:
        raise _fail(f"{MANIFEST}: missing from the bundle")
    manifest_bytes = (folder / MANIFEST).read_bytes()
    listed = _manifest_files(_json_file(folder, MANIFEST))
    _check_signature(folder, present, manifest_bytes, public_key, report)
    _check_files(folder, present, listed, report)
    _check_sums(folder, present, listed, report)

    _, header = _canonical_line(folder, f.RUN_JSON)
    _check_header(header)
    config_bytes, _config = _canonical_line(folder, f.CONFIG)
    config_digest = canonical.sha256_hex(config_bytes)
    if header["config_digest"] is None:
        if config_bytes != b"null\n":
            raise _fail(f"{f.CONFIG}: run.json has no config_digest, so it must be null")
        report(f"ok {f.CONFIG}: none recorded for this run (a schedule slot's row)")
    elif config_digest != header["config_digest"]:
        raise _fail(
            f"{f.CONFIG}: SHA-256 is {config_digest} but run.json's config_digest is "
            f"{header['config_digest']}"
        )
    else:
        report(f"ok {f.CONFIG}: canonical, SHA-256 equals run.json's config_digest")

    facts = _check_digest(folder, header, _json_file(folder, MANIFEST), report)
    _check_rows(folder, header, report)
    version = _json_file(folder, f.VERSION)
    if not isinstance(version, dict):
        raise _fail(f"{f.VERSION}: not a JSON object")
    report(
        f"ok {f.VERSION}: written by audit-job {version.get('version')}, schema revision "
        f"{version.get('schema_revision')}, evidence format {version.get('evidence_format')}"
    )
    return facts


def _manifest_files(manifest: Any) -> dict[str, tuple[int, str]]:
    try:
        entries = manifest["files"]
        listed = {e["name"]: (int(e["size"]), str(e["sha256"])) for e in entries}
    except (TypeError, KeyError, ValueError):
        raise _fail(f"{MANIFEST}: no list of files with name, size and sha256") from None
    if len(listed) != len(entries):
        raise _fail(f"{MANIFEST}: a file is listed twice")
    for name in f.REQUIRED:
        if name not in listed:
            raise _fail(f"{MANIFEST}: does not list {name}")
    return listed


def _check_signature(
    folder: Path, present: set[str], manifest: bytes, public_key: Any | None, report: Report
) -> None:
    if public_key is None:
        if SIGNATURE in present:
            from audit_job.evidence.keys import signature_fingerprint

            named = signature_fingerprint((folder / SIGNATURE).read_bytes())
            report(f"-- signature: made with key {named}; not checked (pass --public-key)")
        else:
            report("-- signature: none (an unsigned bundle)")
        return
    if SIGNATURE not in present:
        raise _fail(f"{SIGNATURE}: missing: the bundle is not signed")
    from audit_job.evidence.keys import check_signature

    fingerprint = check_signature((folder / SIGNATURE).read_bytes(), manifest, public_key)
    report(f"ok {SIGNATURE}: valid Ed25519 signature of {MANIFEST} by key {fingerprint}")


def _check_files(
    folder: Path, present: set[str], listed: dict[str, tuple[int, str]], report: Report
) -> None:
    for name, (size, sha) in sorted(listed.items()):
        if name not in present:
            raise _fail(f"{name}: listed in {MANIFEST} but missing from the bundle")
        actual_size = (folder / name).stat().st_size
        if actual_size != size:
            raise _fail(f"{name}: {actual_size} bytes, {MANIFEST} says {size}")
        actual = file_sha256(folder / name)
        if actual != sha:
            raise _fail(f"{name}: SHA-256 {actual} does not match {MANIFEST} ({sha})")
    for name in sorted(present - set(listed) - NOT_LISTED):
        raise _fail(f"{name}: in the bundle but not in {MANIFEST}")
    report(f"ok {MANIFEST}: {len(listed)} files, every size and SHA-256 matches")


def _check_sums(
    folder: Path, present: set[str], listed: dict[str, tuple[int, str]], report: Report
) -> None:
    if SUMS not in present:
        raise _fail(f"{SUMS}: missing from the bundle")
    try:
        entries = parse_sums((folder / SUMS).read_text(encoding="ascii"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(f"{SUMS}: {exc}") from None
    expected = {name: sha for name, (_size, sha) in listed.items()}
    expected[MANIFEST] = file_sha256(folder / MANIFEST)
    seen = set()
    for number, name, sha in entries:
        if name not in expected:
            raise _fail(f"{SUMS} line {number}: {name} is not a file of the bundle")
        if sha != expected[name]:
            raise _fail(f"{SUMS} line {number}: {name}: SHA-256 does not match the file")
        seen.add(name)
    missing = sorted(set(expected) - seen)
    if missing:
        raise _fail(f"{SUMS}: does not list {missing[0]}")
    report(f"ok {SUMS}: {len(entries)} lines match (as `sha256sum -c {SUMS}` checks)")


def _check_header(header: Any) -> None:
    if not isinstance(header, dict):
        raise _fail(f"{f.RUN_JSON}: not a JSON object")
    wanted = {*canonical.RUN_FIELDS, *canonical.LINK_FIELDS, "format"}
    missing = sorted(wanted - set(header))
    if missing:
        raise _fail(f"{f.RUN_JSON}: no {missing[0]}")
    if header["format"] != canonical.EVIDENCE_FORMAT:
        raise _fail(f"{f.RUN_JSON}: evidence format {header['format']} is not supported")
    for key in ("id", "chain_seq", "total", "active", "inactive", "failed"):
        if not isinstance(header[key], int) or isinstance(header[key], bool):
            raise _fail(f"{f.RUN_JSON}: {key} is not an integer")


def _check_digest(
    folder: Path, header: dict[str, Any], manifest: Any, report: Report
) -> BundleFacts:
    digest = hashlib.sha256()
    for name in (f.RUN_JSON, f.RESULTS):
        with (folder / name).open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    computed = digest.hexdigest()
    chain = _json_file(folder, f.CHAIN)
    if not isinstance(chain, dict):
        raise _fail(f"{f.CHAIN}: not a JSON object")
    if chain.get("digest") != computed:
        raise _fail(
            f"digest: SHA-256 of {f.RUN_JSON} + {f.RESULTS} is {computed} but {f.CHAIN} "
            f"records {chain.get('digest')}: the run's files were changed"
        )
    if manifest.get("digest") != computed:
        raise _fail(f"{MANIFEST}: digest {manifest.get('digest')} is not the run's {computed}")
    for key, header_key in (
        ("run_id", "id"),
        ("seq", "chain_seq"),
        ("prev_run_id", "prev_run_id"),
        ("prev_digest", "prev_digest"),
        ("status", "status"),
    ):
        if chain.get(key) != header[header_key]:
            raise _fail(
                f"{f.CHAIN}: {key} is {chain.get(key)!r} but run.json's {header_key} is "
                f"{header[header_key]!r}"
            )
    if manifest.get("run_id") != header["id"]:
        raise _fail(f"{MANIFEST}: run_id {manifest.get('run_id')} is not run.json's {header['id']}")
    previous = header["prev_digest"] or "none (first link)"
    report(
        f"ok digest: SHA-256 of {f.RUN_JSON} + {f.RESULTS} = {computed} = {f.CHAIN}'s "
        f"(link {header['chain_seq']}, previous {previous})"
    )
    return BundleFacts(
        header["id"], header["chain_seq"], computed, header["prev_run_id"], header["prev_digest"]
    )


def _csv_rows(folder: Path, name: str, header: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    with (folder / name).open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        try:
            first = next(reader, None)
            if first is None or tuple(first) != header:
                raise _fail(f"{name} line 1: the header must be {','.join(header)}")
            for row in reader:
                yield reader.line_num, row
        except (csv.Error, UnicodeDecodeError) as exc:
            raise _fail(f"{name} line {reader.line_num}: not valid CSV ({exc})") from None


def _result(number: int, raw: bytes) -> dict[str, Any]:
    where = f"{f.RESULTS} line {number}"
    if not raw.endswith(b"\n"):
        raise _fail(f"{where}: does not end in a newline")
    try:
        row = json.loads(raw)
    except ValueError as exc:
        raise _fail(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(row, dict) or set(row) != set(canonical.CHECK_FIELDS):
        raise _fail(f"{where}: must have exactly the keys {', '.join(canonical.CHECK_FIELDS)}")
    for key, kinds in _TYPES.items():
        value = row[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise _fail(f"{where}: {key} is not {_TYPE_NAMES[kinds]}")
    try:
        canonical_form = canonical.check_line(tuple(row[k] for k in canonical.CHECK_FIELDS))
    except (TypeError, ValueError):
        canonical_form = ""
    if canonical_form.encode("utf-8") != raw:
        raise _fail(f"{where}: not in canonical form (or a value of the wrong type)")
    if row["status"] not in _STATUSES:
        raise _fail(f"{where}: status {row['status']!r} is not one of {sorted(_STATUSES)}")
    if row["active"] is not _ACTIVE_BY_STATUS[row["status"]]:
        raise _fail(f"{where}: status {row['status']} with active {row['active']}")
    return row


def _check_rows(folder: Path, header: dict[str, Any], report: Report) -> None:
    """results.jsonl alone first (form, order, counts against run.json), then the CSVs
    against it line by line: two passes, so each problem is named where it is."""
    counts = dict.fromkeys(_STATUSES, 0)
    previous: tuple[bytes, bytes] | None = None
    number = 0
    with (folder / f.RESULTS).open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            row = _result(number, raw)
            pair = (row["app_id"].encode("utf-8"), row["user_id"].encode("utf-8"))
            if previous is not None and pair <= previous:
                what = "appears twice" if pair == previous else "is out of order"
                raise _fail(
                    f"{f.RESULTS} line {number}: pair ({row['app_id']}, {row['user_id']}) "
                    f"{what} (ordered by app_id, user_id, UTF-8 bytes; one row per pair)"
                )
            previous = pair
            counts[row["status"]] += 1
    for key, actual in (
        ("total", number),
        ("active", counts["active"]),
        ("inactive", counts["inactive"]),
        ("failed", counts["error"]),
    ):
        if header[key] != actual:
            raise _fail(f"{f.RUN_JSON}: {key} is {header[key]} but {f.RESULTS} has {actual}")
    report(
        f"ok {f.RESULTS}: {number} rows, canonical, in order, no pair twice; counts equal "
        f"run.json's (active {counts['active']}, inactive {counts['inactive']}, error "
        f"{counts['error']}, pending {counts['pending']})"
    )
    _check_csvs(folder, number, report)


def _check_csvs(folder: Path, rows: int, report: Report) -> None:
    results_csv = _csv_rows(folder, f.RESULTS_CSV, canonical.CHECK_FIELDS)
    snapshot = _csv_rows(folder, f.SNAPSHOT, f.SNAPSHOT_HEADER)
    with (folder / f.RESULTS).open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            row = json.loads(raw)
            shown = f"({row['app_id']}, {row['user_id']})"
            expected = [f.csv_value(row[k]) for k in canonical.CHECK_FIELDS]
            csv_line, csv_row = next(results_csv, (None, None))
            if csv_row != expected:
                where = f"line {csv_line}" if csv_line else "ends early"
                raise _fail(f"{f.RESULTS_CSV} {where}: differs from {f.RESULTS} line {number}")
            snap_line, snap_row = next(snapshot, (None, None))
            if snap_row != [row["app_id"], row["user_id"]]:
                if snap_row is None:
                    raise _fail(f"{f.RESULTS} line {number}: pair {shown} is not in {f.SNAPSHOT}")
                raise _fail(
                    f"{f.SNAPSHOT} line {snap_line}: pair ({', '.join(snap_row)}) does not have "
                    f"exactly one result ({f.RESULTS} line {number} is {shown})"
                )
    extra = next(results_csv, None)
    if extra is not None:
        raise _fail(f"{f.RESULTS_CSV} line {extra[0]}: a row that {f.RESULTS} does not have")
    extra = next(snapshot, None)
    if extra is not None:
        raise _fail(
            f"{f.SNAPSHOT} line {extra[0]}: pair ({', '.join(extra[1])}) has no result in "
            f"{f.RESULTS}"
        )
    report(f"ok {f.RESULTS_CSV}: the same {rows} rows")
    report(f"ok {f.SNAPSHOT}: {rows} pairs, each with exactly one result")


def check_links(facts: list[BundleFacts], report: Report) -> None:
    """Bundles of consecutive links must chain: each one's prev_digest is the digest of
    the one before."""
    ordered = sorted(facts, key=lambda item: item.seq)
    for before, after in itertools.pairwise(ordered):
        if after.seq == before.seq:
            if after.digest != before.digest:
                raise _fail(f"chain: two different bundles claim link {after.seq}")
            continue
        if after.seq != before.seq + 1:
            report(f"-- chain: links {before.seq + 1}-{after.seq - 1} not among these bundles")
            continue
        if after.prev_digest != before.digest:
            raise _fail(
                f"chain: link {after.seq} (run {after.run_id}) names previous digest "
                f"{after.prev_digest}, but link {before.seq} (run {before.run_id}) is "
                f"{before.digest}"
            )
        report(f"ok chain: link {after.seq} (run {after.run_id}) follows link {before.seq}")
