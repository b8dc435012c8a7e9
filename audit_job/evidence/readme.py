"""README.txt: what each file of a bundle is and how to check it, for the auditor."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

WIDTH = 88

FILE_NOTES = {
    "run.json": "the run's header: its audit_run row (trigger, status, times, filters, "
    "totals, configuration digest) and its chain link (chain_seq, prev_run_id, "
    "prev_digest); one canonical JSON line",
    "results.jsonl": "every check of the run, one canonical JSON line each, ordered by "
    "app_id then user_id (UTF-8 byte order)",
    "results.csv": "the same checks as CSV (header line first; empty = null)",
    "snapshot.csv": "the pairs the run checked (app_id,user_id), in the same order; the "
    "filters that narrowed them are in run.json",
    "config.json": "the effective configuration of the run with every secret removed "
    "(its SHA-256 is run.json's config_digest)",
    "chain.json": "this run's link in the hash chain: its digest and the previous link's",
    "version.json": "the audit-job version and database schema revision that wrote it",
    "violations.csv": "policy violations found in this run",
    "events.jsonl": "events recorded for this run, one canonical JSON line each",
    "manifest.json": "every other file with its size and SHA-256 (what the signature covers)",
    "SHA256SUMS": "the same hashes (and manifest.json's) for `sha256sum -c`",
    "manifest.json.sig": "Ed25519 signature of manifest.json, naming the key's fingerprint",
    "README.txt": "this file",
}


def readme_text(header: Mapping[str, Any], digest: str, names: Sequence[str]) -> bytes:
    listed = sorted({*names, "README.txt", "manifest.json", "SHA256SUMS"})
    width = max(len(name) for name in listed)
    files = "\n".join(
        textwrap.fill(
            FILE_NOTES.get(name, ""),
            WIDTH,
            initial_indent=f"  {name.ljust(width)}  ",
            subsequent_indent=" " * (width + 4),
        )
        for name in listed
    )
    prev = header.get("prev_digest") or "none (the first link of the chain)"
    filters = header.get("filters") or "none (every enabled target)"
    summary = textwrap.fill(
        f"Run {header['id']} ({header['trigger']}, {header['status']}), started "
        f"{header['started_at']}, ended {header['finished_at']}; {header['total']} pairs: "
        f"{header['active']} active, {header['inactive']} inactive, {header['failed']} error. "
        f"Filters: {filters}.",
        WIDTH,
    )
    text = f"""audit-job evidence bundle: run {header["id"]}

{summary}

Digest of the run:      {digest}
Chain link:             {header["chain_seq"]}
Previous link's digest: {prev}

Files
{files}

Canonical form
  Each JSON line is canonical: keys sorted, no whitespace, UTF-8, integers as integers,
  true/false/null, times as YYYY-MM-DDTHH:MM:SS.ffffffZ (UTC), then a newline. It is what
  Python writes with json.dumps(obj, sort_keys=True, separators=(",", ":"),
  ensure_ascii=False), and RFC 8785 (JCS) for these documents.
  The run's digest is SHA-256 over run.json followed by results.jsonl.

Verify with standard tools
  sha256sum -c SHA256SUMS                  every file against its recorded hash
  cat run.json results.jsonl | sha256sum   prints the digest above (chain.json "digest")
  sha256sum config.json                    equals run.json's config_digest
  A signed bundle (manifest.json.sig), with the signer's public key KEY.pub:
    python3 -c 'import json,base64,sys; sys.stdout.buffer.write(base64.b64decode(
      json.load(open("manifest.json.sig"))["signature"]))' > manifest.sig.bin
    openssl pkeyutl -verify -pubin -inkey KEY.pub -rawin -in manifest.json \\
      -sigfile manifest.sig.bin
  The key's fingerprint (named in manifest.json.sig):
    openssl pkey -pubin -in KEY.pub -outform DER | tail -c 32 | sha256sum

Verify with audit-job (offline: no database, no configuration)
  audit-job verify BUNDLE [--public-key KEY.pub]
  checks every file against manifest.json and SHA256SUMS, the signature, the digest, and
  that run.json's counts equal the rows, no pair appears twice, and every pair of
  snapshot.csv has exactly one result. Several bundles at once also have their chain
  links checked against each other. `audit-job verify --db` checks the whole chain in the
  database the bundle came from.
"""
    return text.encode("utf-8")
