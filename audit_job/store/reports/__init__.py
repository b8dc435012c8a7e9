"""Read-side queries for the reporting commands, and the words they share: the column
names of each export (the CLI's headers) and the labels of a change.

- `listing.py`: the run list and which runs a report refers to.
- `checks.py`: check exports, a pair's history, per-app counts.
- `changes.py`: how one run differs from another, pair by pair.

Anything that can be large (checks, changes) is fetched in keyset pages, each page on a
connection of its own, so an export of a million rows holds one page in memory and no
transaction stays open for the whole export. Plain SQL shapes only (LEFT JOIN, no FULL
OUTER JOIN, no window functions) so the same statements run on SQLite, PostgreSQL and
MySQL/MariaDB. Retention (deleting old checks) is store/retention.py.
"""

from __future__ import annotations

from typing import Any

from audit_job.models import RunStatus

PAGE = 5000
NOT_REAL = (RunStatus.SKIPPED_OVERLAP.value, RunStatus.MISSED.value)  # runs without checks

RUN_COLUMNS = [
    "id",
    "trigger",
    "status",
    "started_at",
    "finished_at",
    "duration_seconds",
    "total",
    "active",
    "inactive",
    "failed",
    "retries",
    "throttled",
    "scheduled_for",
    "missed_count",
    "learned_rate_per_second",
    "message",
]
CHECK_COLUMNS = [
    "run_id",
    "app_id",
    "user_id",
    "status",
    "active",
    "checked_at",
    "attempts",
    "http_status",
    "status_code",
    "api_code",
    "message",
    "request_id",
    "latency_ms",
]
HISTORY_COLUMNS = ["run_id", "run_started_at", "status", "active", "checked_at", "change"]
CHANGE_COLUMNS = [
    "app_id",
    "user_id",
    "change",
    "from_run_id",
    "from_status",
    "to_run_id",
    "to_status",
    "checked_at",
]

ACTIVATED = "inactive->active"
DEACTIVATED = "active->inactive"
NEWLY_SEEN = "newly_seen"
GONE = "gone_from_targets"
FIRST_SEEN = "first_seen"


def newly_seen_or_flipped(now: Any, before: Any) -> Any:
    """SQL: the pair has no row in the base run (`before`, outer-joined), or both runs
    answered it and the answers differ (an error on either side is no answer)."""
    from sqlalchemy import and_, or_

    return or_(
        before.c.id.is_(None),
        and_(
            now.c.active.is_not(None), before.c.active.is_not(None), now.c.active != before.c.active
        ),
    )
