"""The run digest and the hash chain on SQLite and PostgreSQL: the same digest for the same
results on both, links in the order runs end, and `verify --db`'s walk naming the run
that was changed after it ended."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pgsupport import only_pg
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.commands.evidence_chain import verify_chain
from audit_job.commands.prune import prune
from audit_job.errors import EvidenceMismatch
from audit_job.evidence import canonical
from audit_job.models import CheckResult, CheckStatus, RunStatus
from audit_job.store import evidence, leader, migrate
from audit_job.store import results as result_store
from audit_job.store import runs as store
from audit_job.store import snapshot as snapshot_store
from audit_job.store.engine import create_engine
from audit_job.store.tables import audit_chain, audit_run, session_check

T0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
# Answers that differ in everything a digest must see: byte order against collation order
# ("B" < "a", "z" < "é"), quotes, backslashes, control characters, CJK, emoji, nulls, a
# time with no microseconds, a 64-bit apiCode.
ANSWERS = [
    ("app-a", "B", CheckStatus.ACTIVE, True, T0, 1, 200, 200, 200, None, "r-1", 12),
    ("app-a", "a", CheckStatus.INACTIVE, False, T0 + timedelta(microseconds=7), 2, 200, 200, 200,
     None, "r-2", 30),
    ("app-a", "é", CheckStatus.ERROR, None, T0, 1, 200, 404, 2004, "用户不存在", "r-3", 9),
    ("app-a", "z", CheckStatus.ERROR, None, T0, 5, 503, None, 2**40, 'bad "json"\\ \x01\n\t',
     None, None),
    ("app-b", "😀 user", CheckStatus.ACTIVE, True, T0 + timedelta(seconds=1, microseconds=999999),
     1, 200, 200, 200, None, "r-5", 1),
]  # fmt: skip
PENDING = ("app-b", "never-answered")
# The digest of that run (a fixed header, link 1): the same on every backend.
EXPECTED_DIGEST = "541309a8ad6c3c1a0355eb592ed65334d2261948f5c832d7864426dd72a60c7a"


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def new_run(engine: AsyncEngine, answers=ANSWERS, pending=(PENDING,)) -> int:  # type: ignore[no-untyped-def]
    async with engine.begin() as conn:
        run_id = await store.create_run(conn, trigger="manual", filters={"app": "app-a"})
        await snapshot_store.add_snapshot_rows(
            conn, run_id, [(*a[:2], None) for a in answers] + [(*p, None) for p in pending]
        )
    async with engine.begin() as conn:
        ids = {
            (r.app_id, r.user_id): r.id
            for r in await conn.execute(
                select(session_check).where(session_check.c.run_id == run_id)
            )
        }
        results = [
            (ids[(a[0], a[1])], a[0], a[1], CheckResult(*a[2:]), None)
            for a in answers  # type: ignore[misc]
        ]
        await result_store.write_results(conn, run_id, results, retries=3, throttled=1)
    return run_id


async def end_run(engine: AsyncEngine, run_id: int, status: RunStatus = RunStatus.SUCCEEDED):  # type: ignore[no-untyped-def]
    """Finish and seal in one transaction, as commands/run.py does; times pinned so the
    header is the same on every backend."""
    async with engine.begin() as conn:
        counts = await store.status_counts(conn, run_id)
        await store.finish_run(conn, run_id, status, "done", counts)
        await conn.execute(
            update(audit_run)
            .where(audit_run.c.id == run_id)
            .values(started_at=T0, finished_at=T0 + timedelta(seconds=3), snapshot_at=T0,
                    owner="host:1")
        )  # fmt: skip
        return await evidence.seal_run(conn, run_id)


def reference_digest(run_id: int, seq: int, prev: tuple[int, str] | None) -> str:
    """The digest computed from the answers alone, by the definition (json.dumps)."""
    import json

    header = {name: None for name in canonical.RUN_FIELDS}
    header.update(
        id=run_id, trigger="manual", status="succeeded", started_at=canonical.format_time(T0),
        finished_at=canonical.format_time(T0 + timedelta(seconds=3)),
        snapshot_at=canonical.format_time(T0), owner="host:1", filters={"app": "app-a"},
        total=6, active=2, inactive=1, failed=2, retries=3, throttled=1, message="done",
        chain_seq=seq, prev_run_id=prev[0] if prev else None, prev_digest=prev[1] if prev else None,
        format=1,
    )  # fmt: skip
    rows = [
        dict(zip(canonical.CHECK_FIELDS, (*a[:3], a[3], canonical.format_time(a[4]), *a[5:]),
                 strict=True))
        for a in ANSWERS
    ]  # fmt: skip
    rows.append(dict.fromkeys(canonical.CHECK_FIELDS))
    rows[-1].update(app_id=PENDING[0], user_id=PENDING[1], status="pending", attempts=0)
    rows.sort(key=lambda r: (r["app_id"].encode(), r["user_id"].encode()))

    def dumps(value: object) -> bytes:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    data = dumps(header) + b"\n" + b"".join(dumps(r) + b"\n" for r in rows)
    return hashlib.sha256(data).hexdigest()


async def walk(engine: AsyncEngine, **kwargs: int) -> list[str]:
    lines: list[str] = []
    async with engine.begin() as conn:
        await verify_chain(conn, lines.append, **kwargs)
    return lines


async def test_the_digest_is_the_definitions_and_the_same_on_every_backend(
    engine: AsyncEngine,
) -> None:
    run_id = await new_run(engine)
    link = await end_run(engine, run_id)
    assert link is not None and (link.seq, link.prev_digest) == (1, None)
    assert link.digest == reference_digest(run_id, 1, None)
    assert link.digest == EXPECTED_DIGEST
    async with engine.connect() as conn:
        stored = await evidence.latest_link(conn, run_id)
    assert stored == link


async def test_links_follow_the_order_in_which_runs_end(engine: AsyncEngine) -> None:
    first, second = await new_run(engine), await new_run(engine)
    link_a = await end_run(engine, second)
    link_b = await end_run(engine, first)
    assert link_a and link_b
    assert (link_a.run_id, link_a.seq, link_b.run_id, link_b.seq) == (second, 1, first, 2)
    assert link_b.prev_digest == link_a.digest
    assert link_b.digest == reference_digest(first, 2, (second, link_a.digest))
    lines = await walk(engine)
    assert lines[-1].startswith(f"ok chain: links 1-2 verify; head: link 2 (run {first})")


async def test_an_interrupted_run_is_sealed_only_when_it_finally_ends(engine: AsyncEngine) -> None:
    run_id = await new_run(engine)
    assert await end_run(engine, run_id, RunStatus.INTERRUPTED) is None
    async with engine.begin() as conn:
        await store.take_over(conn, run_id)
    link = await end_run(engine, run_id, RunStatus.COMPLETED_WITH_ERRORS)
    assert link is not None and link.seq == 1 and link.status == "completed_with_errors"


async def test_a_failed_run_resumed_later_gets_a_new_link_and_the_old_one_is_superseded(
    engine: AsyncEngine,
) -> None:
    run_id = await new_run(engine)
    failed = await end_run(engine, run_id, RunStatus.FAILED)
    async with engine.begin() as conn:
        await store.take_over(conn, run_id)
    assert any("resumed after this link" in line for line in await walk(engine))
    final = await end_run(engine, run_id, RunStatus.SUCCEEDED)
    assert failed and final and (failed.seq, final.seq) == (1, 2)
    assert final.prev_digest == failed.digest
    lines = await walk(engine)
    assert "superseded by link 2" in lines[0]
    assert lines[-1].startswith("ok chain: links 1-2 verify")


async def test_schedule_slot_rows_join_the_chain(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        assert await leader.record_slot(conn, T0, RunStatus.MISSED, "daemon down", epoch=None,
                                        missed=(T0, T0, 1))  # fmt: skip
        assert not await leader.record_slot(conn, T0, RunStatus.MISSED, "again", epoch=None)
        await leader.record_slot(conn, T0 + timedelta(hours=1), RunStatus.SKIPPED_OVERLAP,
                                 "a run was going", epoch=None)  # fmt: skip
    async with engine.connect() as conn:
        chain = await evidence.links(conn)
    assert [link.status for link in chain] == ["missed", "skipped_overlap"]
    assert chain[1].prev_digest == chain[0].digest
    assert (await walk(engine))[-1].startswith("ok chain: links 1-2 verify")


TAMPERING = {
    "flip one answer": lambda run_id, row_id: (
        update(session_check)
        .where(session_check.c.id == row_id)
        .values(active=~session_check.c.active)
    ),
    "delete a check": lambda run_id, row_id: delete(session_check).where(
        session_check.c.id == row_id
    ),
    "edit a total": lambda run_id, row_id: (
        update(audit_run).where(audit_run.c.id == run_id).values(active=audit_run.c.active + 1)
    ),
    "edit the message": lambda run_id, row_id: (
        update(audit_run).where(audit_run.c.id == run_id).values(message="all good")
    ),
}


@pytest.mark.parametrize("change", sorted(TAMPERING))
async def test_verify_names_the_run_changed_after_it_ended(
    engine: AsyncEngine, change: str
) -> None:
    runs = [await new_run(engine) for _ in range(3)]
    for run_id in runs:
        await end_run(engine, run_id)
    victim = runs[1]
    async with engine.begin() as conn:
        row_id = (
            await conn.execute(
                select(session_check.c.id).where(
                    session_check.c.run_id == victim, session_check.c.user_id == "B"
                )
            )
        ).scalar_one()
        await conn.execute(TAMPERING[change](victim, row_id))
    with pytest.raises(EvidenceMismatch, match=rf"^run {victim} \(link 2\): its stored digest"):
        await walk(engine)
    # Up to the run before, the chain still holds.
    assert (await walk(engine, last_run=runs[0]))[-1].startswith("ok chain: links 1-1")


async def test_a_broken_or_shortened_chain_is_named(engine: AsyncEngine) -> None:
    runs = [await new_run(engine) for _ in range(3)]
    for run_id in runs:
        await end_run(engine, run_id)
    async with engine.begin() as conn:
        await conn.execute(
            update(audit_chain).where(audit_chain.c.seq == 2).values(prev_digest="0" * 64)
        )
    with pytest.raises(EvidenceMismatch, match=rf"run {runs[1]} \(link 2\): its previous digest"):
        await walk(engine)
    async with engine.begin() as conn:
        await conn.execute(delete(audit_chain).where(audit_chain.c.seq == 2))
    with pytest.raises(EvidenceMismatch, match="link 2 is missing"):
        await walk(engine)
    async with engine.begin() as conn:
        await conn.execute(delete(audit_chain).where(audit_chain.c.seq == 3))
    with pytest.raises(EvidenceMismatch, match=rf"run {runs[1]} \(succeeded\) ended after"):
        await walk(engine)


async def test_the_chain_still_verifies_across_pruned_runs(engine: AsyncEngine) -> None:
    runs = [await new_run(engine) for _ in range(3)]
    for run_id in runs:
        await end_run(engine, run_id)
    result = await prune(engine, 30, now=datetime.now(UTC) + timedelta(days=400), batch=2)
    assert result.runs == runs[:2]  # never the latest run
    async with engine.connect() as conn:
        assert await store.status_counts(conn, runs[0]) == dict.fromkeys(
            ("pending", "active", "inactive", "error"), 0
        )
    lines = await walk(engine)
    assert [("content pruned" in line) for line in lines[:3]] == [True, True, False]
    assert lines[-1].startswith("ok chain: links 1-3 verify")


@only_pg
async def test_two_runs_ending_at_once_never_claim_the_same_predecessor(
    engine: AsyncEngine,
) -> None:
    first, second = await new_run(engine), await new_run(engine)
    async with engine.connect() as holder:
        async with holder.begin():
            counts = await store.status_counts(holder, first)
            await store.finish_run(holder, first, RunStatus.SUCCEEDED, None, counts)
            link_a = await evidence.seal_run(holder, first)
            # The second run's end must wait for the first's lock, not read the same head.
            other = asyncio.create_task(end_run(engine, second))
            await asyncio.sleep(0.5)
            assert not other.done()
        link_b = await other
    assert link_a and link_b and (link_a.seq, link_b.seq) == (1, 2)
    assert link_b.prev_digest == link_a.digest


async def test_downgrade_keeps_every_check(engine: AsyncEngine) -> None:
    run_id = await new_run(engine)
    await end_run(engine, run_id)
    await migrate.downgrade(engine, "0005")
    async with engine.connect() as conn:
        count = await conn.execute(
            select(session_check.c.id).where(session_check.c.run_id == run_id)
        )
        assert len(count.all()) == len(ANSWERS) + 1
    assert await migrate.upgrade(engine) == migrate.head_revision()
