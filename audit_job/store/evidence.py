"""Evidence in the database: each run's configuration, and the hash chain over run ends.

Chain rule. When a run reaches a sealed status (SEALED: succeeded, completed_with_errors,
failed, and the daemon's skipped_overlap and missed slot rows), the transaction that sets
the status also appends link `seq` = previous seq + 1 to `audit_chain`: the run's digest
over its canonical form (evidence/canonical.py), whose header holds `chain_seq`, the
previous link's run id and digest. The chain therefore follows the order in which runs
ended, and a lock (PostgreSQL: a transaction-level advisory lock; SQLite: the write lock,
taken first) keeps two ending runs from claiming the same predecessor; `seq` being the key
makes a second claim fail rather than fork the chain.

`interrupted` is not sealed: the run is paused and will be resumed (or stays visibly open).
A `failed` run can be resumed too: it then gets a new link when it ends again, and its
earlier link stays in the chain, superseded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.config import Settings
from audit_job.evidence import canonical
from audit_job.evidence.config import config_document
from audit_job.models import RunStatus
from audit_job.store.dialect import insert_ignore
from audit_job.store.evidence_rows import line_pages
from audit_job.store.tables import audit_chain, audit_config, audit_run
from audit_job.store.types import utcnow

SEALED = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.COMPLETED_WITH_ERRORS,
        RunStatus.FAILED,
        RunStatus.SKIPPED_OVERLAP,
        RunStatus.MISSED,
    }
)
REOPENABLE = frozenset({RunStatus.FAILED})  # `run --resume` takes these up again
CHAIN_LOCK_KEY = 720462  # run creation uses 720461 (store/runs.py)
_RUN_COLUMNS = [audit_run.c[name] for name in (*canonical.RUN_FIELDS, "pruned_at")]


@dataclass(frozen=True)
class Link:
    seq: int
    run_id: int
    status: str
    digest: str
    prev_digest: str | None
    sealed_at: datetime


def _link(row: Any) -> Link:
    return Link(
        int(row.seq), int(row.run_id), row.status, row.digest, row.prev_digest, row.sealed_at
    )


_LINK_COLUMNS = [audit_chain.c[name] for name in Link.__dataclass_fields__]


# -- configuration -------------------------------------------------------------------------


async def record_config(conn: AsyncConnection, run_id: int, settings: Settings) -> str:
    """Store the run's effective configuration (secrets removed) and point the run at it."""
    body, digest = config_document(settings)
    await conn.execute(
        insert_ignore(audit_config, conn.dialect.name, ["digest"]).values(
            digest=digest, body=body.decode("utf-8"), created_at=utcnow()
        )
    )
    await conn.execute(
        update(audit_run).where(audit_run.c.id == run_id).values(config_digest=digest)
    )
    return digest


async def config_body(conn: AsyncConnection, digest: str) -> bytes | None:
    stmt = select(audit_config.c.body).where(audit_config.c.digest == digest)
    body = (await conn.execute(stmt)).scalar_one_or_none()
    return None if body is None else body.encode("utf-8")


# -- the chain -----------------------------------------------------------------------------


async def lock_chain(conn: AsyncConnection) -> None:
    """Serialise appending to the chain until the caller's transaction ends."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        await conn.execute(text(f"SELECT pg_advisory_xact_lock({CHAIN_LOCK_KEY})"))
    elif dialect == "sqlite":
        # Take SQLite's write lock before reading the head: a transaction that read first
        # could not write after another one appended (and would fail, not wait).
        await conn.execute(update(audit_chain).where(audit_chain.c.seq == -1).values(seq=-1))
    else:
        # MySQL/MariaDB (InnoDB): a locking read of the last key blocks inserts past it.
        await conn.execute(
            select(audit_chain.c.seq).order_by(audit_chain.c.seq.desc()).limit(1).with_for_update()
        )


async def run_row(conn: AsyncConnection, run_id: int) -> dict[str, Any] | None:
    row = (await conn.execute(select(*_RUN_COLUMNS).where(audit_run.c.id == run_id))).first()
    return dict(row._mapping) if row else None


async def chain_head(conn: AsyncConnection) -> Link | None:
    stmt = select(*_LINK_COLUMNS).order_by(audit_chain.c.seq.desc()).limit(1)
    row = (await conn.execute(stmt)).first()
    return _link(row) if row else None


async def link_at(conn: AsyncConnection, seq: int) -> Link | None:
    row = (await conn.execute(select(*_LINK_COLUMNS).where(audit_chain.c.seq == seq))).first()
    return _link(row) if row else None


async def latest_link(conn: AsyncConnection, run_id: int) -> Link | None:
    stmt = (
        select(*_LINK_COLUMNS)
        .where(audit_chain.c.run_id == run_id)
        .order_by(audit_chain.c.seq.desc())
        .limit(1)
    )
    row = (await conn.execute(stmt)).first()
    return _link(row) if row else None


async def links(
    conn: AsyncConnection, first_seq: int | None = None, last_seq: int | None = None
) -> list[Link]:
    """Links in chain order (one per run end: small next to the checks)."""
    stmt = select(*_LINK_COLUMNS).order_by(audit_chain.c.seq)
    if first_seq is not None:
        stmt = stmt.where(audit_chain.c.seq >= first_seq)
    if last_seq is not None:
        stmt = stmt.where(audit_chain.c.seq <= last_seq)
    return [_link(row) for row in await conn.execute(stmt)]


async def seq_range_of_runs(
    conn: AsyncConnection, first_run: int | None, last_run: int | None
) -> tuple[int | None, int | None]:
    """The first link of `first_run` and the last link of `last_run` (None: open end)."""
    first = last = None
    if first_run is not None:
        stmt = select(func.min(audit_chain.c.seq)).where(audit_chain.c.run_id == first_run)
        first = (await conn.execute(stmt)).scalar_one_or_none()
        if first is None:
            first = -1  # caller reports the run as not in the chain
    if last_run is not None:
        stmt = select(func.max(audit_chain.c.seq)).where(audit_chain.c.run_id == last_run)
        last = (await conn.execute(stmt)).scalar_one_or_none()
        if last is None:
            last = -1
    return first, last


def header_line(run: dict[str, Any], link_seq: int, prev: Link | None) -> bytes:
    header = canonical.run_header(
        run,
        link_seq,
        prev.run_id if prev else None,
        prev.digest if prev else None,
    )
    return canonical.line(header)


async def run_digest(conn: AsyncConnection, run_id: int, header: bytes) -> tuple[str, int]:
    """SHA-256 of run.json (`header`) and the run's results.jsonl, streamed; and the row
    count."""
    digest = canonical.RunDigest(header)
    rows = 0
    async for page in line_pages(conn, run_id):
        digest.add_lines(page)
        rows += len(page)
    return digest.hexdigest(), rows


async def seal_run(conn: AsyncConnection, run_id: int) -> Link | None:
    """Append the run's link to the chain when its status is sealed (None otherwise), in
    the caller's transaction: the one that set the final status."""
    await lock_chain(conn)
    run = await run_row(conn, run_id)
    if run is None or run["status"] not in SEALED:
        return None
    head = await chain_head(conn)
    seq = head.seq + 1 if head else 1
    digest, _rows = await run_digest(conn, run_id, header_line(run, seq, head))
    link = Link(seq, run_id, run["status"], digest, head.digest if head else None, utcnow())
    await conn.execute(
        audit_chain.insert().values(
            seq=link.seq,
            run_id=link.run_id,
            status=link.status,
            digest=link.digest,
            prev_digest=link.prev_digest,
            sealed_at=link.sealed_at,
        )
    )
    return link


async def mark_pruned(conn: AsyncConnection, run_id: int) -> None:
    """Record that the run's checks are (being) deleted on purpose: the chain check then
    verifies the run's links and no longer its content."""
    await conn.execute(
        update(audit_run)
        .where(audit_run.c.id == run_id, audit_run.c.pruned_at.is_(None))
        .values(pruned_at=utcnow())
    )


async def run_digests(conn: AsyncConnection, run_ids: Sequence[int]) -> dict[int, str]:
    """Each run's latest digest (runs outside the chain are left out)."""
    if not run_ids:
        return {}
    latest = (
        select(audit_chain.c.run_id, func.max(audit_chain.c.seq).label("seq"))
        .where(audit_chain.c.run_id.in_(list(run_ids)))
        .group_by(audit_chain.c.run_id)
        .subquery()
    )
    stmt = select(audit_chain.c.run_id, audit_chain.c.digest).join(
        latest, audit_chain.c.seq == latest.c.seq
    )
    return {int(row.run_id): row.digest for row in await conn.execute(stmt)}


def _unlinked_sealed_runs(since: datetime, first_run_id: int) -> Any:
    """Runs in a sealed status with no link that ended after the chain began: after its
    first link was made, or created after the first run in it (ids only grow)."""
    linked = select(audit_chain.c.run_id).where(audit_chain.c.run_id == audit_run.c.id)
    return (
        audit_run.c.status.in_([s.value for s in SEALED]),
        ~linked.exists(),
        (audit_run.c.finished_at >= since) | (audit_run.c.id > first_run_id),
    )


async def unsealed_runs(
    conn: AsyncConnection, since: datetime, first_run_id: int
) -> list[tuple[int, str]]:
    """Runs that should have a link and have none (see _unlinked_sealed_runs)."""
    stmt = (
        select(audit_run.c.id, audit_run.c.status)
        .where(*_unlinked_sealed_runs(since, first_run_id))
        .order_by(audit_run.c.id)
    )
    return [(int(row.id), row.status) for row in await conn.execute(stmt)]


async def runs_before_chain(conn: AsyncConnection, since: datetime, first_run_id: int) -> int:
    """How many runs ended before the chain began (before evidence was recorded)."""
    linked = select(audit_chain.c.run_id).where(audit_chain.c.run_id == audit_run.c.id)
    stmt = (
        select(func.count())
        .select_from(audit_run)
        .where(
            audit_run.c.status.in_([s.value for s in SEALED]),
            ~linked.exists(),
            audit_run.c.finished_at < since,
            audit_run.c.id < first_run_id,
        )
    )
    return int((await conn.execute(stmt)).scalar_one())
