"""What a sink receives for one event: the row's columns and its payload as `data`.

    {"id": 42, "type": "violation.opened", "created_at": "2026-12-03T09:00:01.123456+00:00",
     "run_id": 7, "app_id": "payroll", "user_id": "contractor-17", "data": {...}}

`id` increases with every event and never repeats: receivers drop duplicates by it. The
field names are a stable interface (README, "Event feed").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from audit_job.store.events import EventRow, iso


def envelope(row: EventRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "type": row.type,
        "created_at": iso(row.created_at),
        "run_id": row.run_id,
        "app_id": row.app_id,
        "user_id": row.user_id,
        "data": orjson.loads(row.payload),
    }


def line(row: EventRow) -> bytes:
    """One JSON line (the jsonl sink, `audit-job events`)."""
    return orjson.dumps(envelope(row)) + b"\n"


def batch_body(rows: Sequence[EventRow]) -> bytes:
    """A webhook's body: `{"events": [...]}`, compact UTF-8 JSON, in id order."""
    return orjson.dumps({"events": [envelope(row) for row in rows]})
