"""The files of a bundle: names, and the CSV and JSON documents beside the canonical pair."""

from __future__ import annotations

from typing import Any

from audit_job.evidence.canonical import EVIDENCE_FORMAT, line

RUN_JSON = "run.json"
RESULTS = "results.jsonl"
RESULTS_CSV = "results.csv"
SNAPSHOT = "snapshot.csv"
CONFIG = "config.json"
CHAIN = "chain.json"
VERSION = "version.json"
README = "README.txt"
# Written when the run opened or resolved violations, or appended events.
VIOLATIONS = "violations.csv"
EVENTS = "events.jsonl"
REQUIRED = (RUN_JSON, RESULTS, RESULTS_CSV, SNAPSHOT, CONFIG, CHAIN, VERSION, README)
SNAPSHOT_HEADER = ("app_id", "user_id")
CSV_LINE_END = "\n"


def csv_value(value: Any) -> str:
    """A results.csv cell: empty for null, true/false, numbers and text as they are."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def chain_document(
    run_id: int,
    seq: int,
    status: str,
    digest: str,
    prev_run_id: int | None,
    prev_digest: str | None,
    sealed_at: str | None,
) -> bytes:
    return line(
        {
            "run_id": run_id,
            "seq": seq,
            "status": status,
            "digest": digest,
            "prev_run_id": prev_run_id,
            "prev_digest": prev_digest,
            "sealed_at": sealed_at,
        }
    )


def version_document(version: str, schema_revision: str) -> bytes:
    return line(
        {
            "tool": "audit-job",
            "version": version,
            "schema_revision": schema_revision,
            "evidence_format": EVIDENCE_FORMAT,
        }
    )
