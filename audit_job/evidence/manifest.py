"""The bundle's file list: manifest.json (names, sizes, SHA-256) and SHA256SUMS.

manifest.json lists every file of the bundle but itself, SHA256SUMS and the signature;
SHA256SUMS lists the same files and manifest.json, in `sha256sum -c` format, so standard
tools check every file and the signature (over manifest.json) covers them all.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from audit_job.evidence.canonical import EVIDENCE_FORMAT, line

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
SIGNATURE = "manifest.json.sig"
NOT_LISTED = frozenset({MANIFEST, SUMS, SIGNATURE})
_SUMS_LINE = re.compile(r"^([0-9a-f]{64}) [ *](\S+)$")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(folder: Path, names: Iterable[str]) -> list[dict[str, Any]]:
    """{name, size, sha256} of each file, sorted by name."""
    return [
        {"name": name, "size": (folder / name).stat().st_size, "sha256": file_sha256(folder / name)}
        for name in sorted(names, key=lambda n: n.encode("utf-8"))
    ]


def manifest_document(run_id: int, digest: str, files: list[dict[str, Any]]) -> bytes:
    return line({"format": EVIDENCE_FORMAT, "run_id": run_id, "digest": digest, "files": files})


def sums_document(files: Iterable[tuple[str, str]]) -> bytes:
    """`HASH  NAME` lines (text mode, as sha256sum writes them), sorted by name."""
    ordered = sorted(files, key=lambda item: item[0].encode("utf-8"))
    return "".join(f"{sha}  {name}\n" for name, sha in ordered).encode("ascii")


def parse_sums(text: str) -> list[tuple[int, str, str]]:
    """(line number, name, sha256) per line; ValueError naming the first bad line."""
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        match = _SUMS_LINE.match(raw)
        if not match:
            raise ValueError(f"line {number} is not 'SHA256  NAME'")
        entries.append((number, match.group(2), match.group(1)))
    return entries
