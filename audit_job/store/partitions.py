"""PostgreSQL: `session_check` is partitioned by run id range, one partition per run.

A run is the unit of everything that touches history in bulk: its snapshot fills one
partition, its answers update only that partition, reports and exports read one or two runs,
and `prune` frees whole runs. Run ids only grow, so the newest partition is always the one
being written and the oldest are the ones pruned. One partition per run (rather than per N
runs) lets prune drop every prunable run outright: a partition shared with a run still kept
would have to be emptied row by row, which is the cost partitioning is here to avoid.

The tool makes the partitions itself (no cron job, no extension): `ensure_run_partition`
before a run's snapshot, `drop_run_partition` in prune. A new partition is created as a
plain table and then attached, which locks the parent only against other schema changes
(SHARE UPDATE EXCLUSIVE), not against the writes and reports of other runs. Rows of a run
without its own partition (written by hand, or by a tool of an older version during an
upgrade) land in `session_check_default`, so no insert ever fails for want of a partition.

SQLite and MySQL/MariaDB keep one plain table (README: "Partitioned history").
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

PARENT = "session_check"
DEFAULT = "session_check_default"
PREFIX = "session_check_r"
LOCK_TIMEOUT_MS = 30_000  # dropping a partition waits at most this long for readers


def partition_name(run_id: int) -> str:
    return f"{PREFIX}{int(run_id)}"


def is_partition_name(name: str) -> bool:
    """Tables the tool creates at run time (migrations and schema checks leave them be)."""
    return name == DEFAULT or (name.startswith(PREFIX) and name[len(PREFIX) :].isdigit())


async def is_partitioned(conn: AsyncConnection) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    found = await conn.execute(
        text(
            "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "WHERE c.relname = :name AND c.relnamespace = to_regnamespace(current_schema())"
        ),
        {"name": PARENT},
    )
    return found.first() is not None


async def _exists(conn: AsyncConnection, name: str) -> bool:
    found = await conn.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name})
    return bool(found.scalar())


async def ensure_run_partition(conn: AsyncConnection, run_id: int) -> bool:
    """Give run `run_id` its own partition unless it has one (True: it has one now).

    A run that already has rows in the default partition keeps them there (attaching
    would fail on them); prune then deletes its rows instead of dropping a table."""
    if not await is_partitioned(conn):
        return False
    name = partition_name(run_id)
    if await _exists(conn, name):
        return True
    stray = await conn.execute(
        text(f"SELECT 1 FROM {DEFAULT} WHERE run_id = :run LIMIT 1"), {"run": run_id}
    )
    if stray.first() is not None:
        return False
    run = int(run_id)
    # The CHECK matching the bound lets ATTACH skip its validation scan; LIKE copies the
    # columns, NOT NULLs, defaults (the shared id sequence) and CHECK constraints.
    await conn.execute(
        text(
            f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
            f"CONSTRAINT {name}_bound CHECK (run_id >= {run} AND run_id < {run + 1}))"
        )
    )
    await conn.execute(
        text(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES FROM ({run}) TO ({run + 1})")
    )
    await conn.execute(text(f"ALTER TABLE {name} DROP CONSTRAINT {name}_bound"))
    return True


async def drop_run_partition(
    conn: AsyncConnection, run_id: int, known: int | None = None
) -> int | None:
    """Drop run `run_id`'s partition: its checks go at once, leaving no dead rows behind.
    Returns how many checks it held (`known`, when the caller has it: counting a
    million-row partition costs more than dropping it), or None when the run has no
    partition of its own."""
    if not await is_partitioned(conn):
        return None
    name = partition_name(run_id)
    if not await _exists(conn, name):
        return None
    # A long export holding the table would make the DROP wait, and every statement
    # queued behind it: wait a bounded time, then fail (prune can simply be run again).
    await conn.execute(text(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}"))
    count = known
    if count is None:
        count = (await conn.execute(text(f"SELECT count(*) FROM {name}"))).scalar_one()
    await conn.execute(text(f"DROP TABLE {name}"))
    return int(count)


async def analyze_run_partition(conn: AsyncConnection, run_id: int) -> None:
    """Statistics for a freshly filled partition. A new partition has none, and without them
    the planner takes the run's pending rows for a handful and plans each batch's UPDATE as
    a scan of all of them (a million-row run wrote ~600 answers/s instead of thousands)."""
    if await is_partitioned(conn) and await _exists(conn, partition_name(run_id)):
        await conn.execute(text(f"ANALYZE {partition_name(run_id)}"))
