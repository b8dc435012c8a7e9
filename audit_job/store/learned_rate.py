"""The rate a server sustained, kept across runs: read at the start of a run, written during
it and at its end (table `learned_rate`, one row per Authing host and access key id).

A learning is usable when it is younger than `[audit] learned_rate_days` and was made under
the same configured `rate_per_second`: under another cap the server may have been pushed
differently, and a cap changed on purpose says the operator knows better. A run starts at a
learned rate only when the server bounded it (`server_bounded`); a learning at the cap only
records that nothing pushed back. The access key secret is never stored: the key id
identifies the tenant's quota, nothing more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.store.dialect import upsert_columns
from audit_job.store.tables import HOST_LENGTH, KEY_ID_LENGTH, learned_rate
from audit_job.store.types import utcnow

_VALUES = ["rate_per_second", "server_bounded", "configured_rate_per_second", "learned_at"]


@dataclass(frozen=True, slots=True)
class LearnedRate:
    rate_per_second: float
    server_bounded: bool
    configured_rate_per_second: float
    learned_at: datetime


def learning_key(host: str, access_key_id: str) -> tuple[str, str]:
    """The row's key: the host as configured (scheme and port count: another gateway may
    limit differently), lowercased and without a trailing slash; the key id as is."""
    host = host.strip().rstrip("/").lower()
    if len(host) > HOST_LENGTH or len(access_key_id) > KEY_ID_LENGTH:
        raise ValueError("host or access key id too long to keep a learned rate for")
    return host, access_key_id


def same_cap(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9)


async def read_learned_rate(
    conn: AsyncConnection,
    host: str,
    access_key_id: str,
    *,
    configured_rate_per_second: float,
    max_age_days: float,
    now: datetime | None = None,
) -> LearnedRate | None:
    """The usable learning for this host and key, or None (none, too old, other cap)."""
    key_host, key_id = learning_key(host, access_key_id)
    row = (
        await conn.execute(
            select(*(learned_rate.c[name] for name in _VALUES)).where(
                learned_rate.c.host == key_host, learned_rate.c.access_key_id == key_id
            )
        )
    ).first()
    if row is None:
        return None
    learning = LearnedRate(
        float(row.rate_per_second),
        bool(row.server_bounded),
        float(row.configured_rate_per_second),
        row.learned_at,
    )
    if (now or utcnow()) - learning.learned_at > timedelta(days=max_age_days):
        return None
    if not same_cap(learning.configured_rate_per_second, configured_rate_per_second):
        return None
    return learning


async def write_learned_rate(
    conn: AsyncConnection,
    host: str,
    access_key_id: str,
    *,
    rate_per_second: float,
    server_bounded: bool,
    configured_rate_per_second: float,
    now: datetime | None = None,
) -> None:
    """Record (or replace) what this run learned."""
    for name, value in (
        ("rate_per_second", rate_per_second),
        ("configured_rate_per_second", configured_rate_per_second),
    ):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    key_host, key_id = learning_key(host, access_key_id)
    statement = upsert_columns(learned_rate, conn.dialect.name, ["host", "access_key_id"], _VALUES)
    await conn.execute(
        statement,
        [
            {
                "host": key_host,
                "access_key_id": key_id,
                "rate_per_second": float(rate_per_second),
                "server_bounded": server_bounded,
                "configured_rate_per_second": float(configured_rate_per_second),
                "learned_at": now or utcnow(),
            }
        ],
    )
