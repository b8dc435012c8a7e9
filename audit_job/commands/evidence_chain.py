"""`audit-job verify --db`: the hash chain recomputed over the database.

Walks the links in chain order and checks, for each: that it follows the one before
(seq + 1, and its prev_digest is that link's digest), and that its run's current header
and checks still give its digest. A link whose run was resumed later (a failed run) is
superseded by the later link; a pruned run keeps its digest and is checked by its links
only. The first problem stops the walk, naming the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_job.commands.database import open_database
from audit_job.config import Settings
from audit_job.errors import EvidenceMismatch, NotFound
from audit_job.evidence import canonical
from audit_job.models import RunStatus
from audit_job.store import evidence as store
from audit_job.store.tables import audit_chain

Report = Callable[[str], None]
STILL_GOING = frozenset({RunStatus.RUNNING.value, RunStatus.INTERRUPTED.value})


@dataclass(frozen=True)
class ChainSummary:
    links: int
    first_seq: int | None
    last_seq: int | None
    head_digest: str | None


async def _latest_seq_per_run(conn: AsyncConnection, run_ids: list[int]) -> dict[int, int]:
    stmt = (
        select(audit_chain.c.run_id, func.max(audit_chain.c.seq))
        .where(audit_chain.c.run_id.in_(run_ids))
        .group_by(audit_chain.c.run_id)
    )
    return {int(run_id): int(seq) for run_id, seq in await conn.execute(stmt)}


async def _check_link(
    conn: AsyncConnection, link: store.Link, prev: store.Link | None, latest: int, report: Report
) -> None:
    name = f"run {link.run_id} (link {link.seq})"
    run = await store.run_row(conn, link.run_id)
    if run is None:
        raise EvidenceMismatch(f"{name}: the run's audit_run row is gone")
    if latest != link.seq:
        report(f"ok {name}: {link.status}, superseded by link {latest} (the run was resumed)")
        return
    if run["pruned_at"] is not None:
        report(
            f"ok {name}: {link.status}, content pruned at "
            f"{canonical.format_time(run['pruned_at'])}; digest kept, links checked"
        )
        return
    if run["status"] != link.status:
        if link.status in {s.value for s in store.REOPENABLE} and run["status"] in STILL_GOING:
            report(
                f"-- {name}: resumed after this link (now {run['status']}); sealed again at its end"
            )
            return
        raise EvidenceMismatch(
            f"{name}: sealed as {link.status} but now {run['status']}: the run was changed "
            "after it ended"
        )
    digest, rows = await store.run_digest(conn, link.run_id, store.header_line(run, link.seq, prev))
    if digest != link.digest:
        raise EvidenceMismatch(
            f"{name}: its stored digest is {link.digest} but its header and {rows} checks "
            f"now give {digest}: the run was changed after it ended (a check, a total or "
            "another column of its row)"
        )
    if run["config_digest"] is not None:
        body = await store.config_body(conn, run["config_digest"])
        if body is None or canonical.sha256_hex(body) != run["config_digest"]:
            raise EvidenceMismatch(
                f"{name}: its configuration {run['config_digest']} is missing from "
                "audit_config or was changed"
            )
    report(f"ok {name}: {link.status}, {rows} checks give its digest {digest}")


async def verify_chain(
    conn: AsyncConnection, report: Report, first_run: int | None = None, last_run: int | None = None
) -> ChainSummary:
    first_seq, last_seq = await store.seq_range_of_runs(conn, first_run, last_run)
    for run, seq in ((first_run, first_seq), (last_run, last_seq)):
        if seq == -1:
            raise NotFound(f"run {run} is not in the chain (it has no digest)")
    chain = await store.links(conn, first_seq, last_seq)
    if not chain:
        report("-- chain: empty (no run has ended since evidence was recorded)")
        return ChainSummary(0, None, None, None)
    prev = await store.link_at(conn, chain[0].seq - 1) if chain[0].seq > 1 else None
    if chain[0].seq > 1 and prev is None:
        raise EvidenceMismatch(f"link {chain[0].seq - 1} is missing (before run {chain[0].run_id})")
    latest = await _latest_seq_per_run(conn, sorted({link.run_id for link in chain}))
    for link in chain:
        expected = prev.seq + 1 if prev else 1
        if link.seq != expected:
            raise EvidenceMismatch(
                f"link {expected} is missing: link {expected - 1} is followed by link "
                f"{link.seq} (run {link.run_id})"
            )
        wanted = prev.digest if prev else None
        if link.prev_digest != wanted:
            before = f"link {prev.seq}'s (run {prev.run_id}) {prev.digest}" if prev else "none"
            raise EvidenceMismatch(
                f"run {link.run_id} (link {link.seq}): its previous digest {link.prev_digest} "
                f"is not {before}: the chain is broken here"
            )
        await _check_link(conn, link, prev, latest[link.run_id], report)
        prev = link
    if first_run is None and last_run is None:
        since = chain[0].sealed_at
        first_run = min(link.run_id for link in chain)
        unsealed = await store.unsealed_runs(conn, since, first_run)
        if unsealed:
            run_id, status = unsealed[0]
            raise EvidenceMismatch(
                f"run {run_id} ({status}) ended after the chain began but has no link: its "
                "link was deleted, or its status changed"
            )
        older = await store.runs_before_chain(conn, since, first_run)
        if older:
            report(f"-- {older} runs ended before the chain began (before evidence was recorded)")
    head = chain[-1]
    report(
        f"ok chain: links {chain[0].seq}-{head.seq} verify; head: link {head.seq} "
        f"(run {head.run_id}), digest {head.digest}"
    )
    return ChainSummary(len(chain), chain[0].seq, head.seq, head.digest)


async def verify_database(
    settings: Settings, report: Report, first_run: int | None = None, last_run: int | None = None
) -> ChainSummary:
    async with open_database(settings) as engine, engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # one snapshot for the whole walk
            await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            return await verify_chain(conn, report, first_run, last_run)
