"""The README's example queries, as printed there, on every backend against real runs
(reporting_scenario): each must run and give what the store's own tables say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import ROOT
from reporting_scenario import Scenario, build_scenario, checks_by_pair
from sqlalchemy import case, func, select

from audit_job.store.engine import opened
from audit_job.store.tables import audit_target, session_check, session_state

pytestmark = pytest.mark.timeout(60)
# The tag that marks a backend's own line in a query (the other backends' lines go).
TAGS = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mariadb": "MySQL/MariaDB"}
SECTION = "### Example queries"


def readme_queries(backend: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    assert section.splitlines()[0].strip().endswith("and MariaDB)"), section.splitlines()[0]
    queries = []
    for block in re.findall(r"```sql\n(.*?)```", section, flags=re.S):
        lines = []
        for line in block.splitlines():
            tagged = re.search(r"\s--\s*(\S+)( \(.*\))?$", line)
            if tagged and tagged.group(1) in TAGS.values():
                if tagged.group(1) != TAGS[backend]:
                    continue
                line = line[: tagged.start()]
                if line.startswith("--"):  # the README shows this backend's line commented
                    line = "  " + line[2:]
            lines.append(line)
        queries.append("\n".join(lines).strip().rstrip(";"))
    return queries


@pytest.fixture
async def scenario(db_url: str, tmp_path: Path) -> Scenario:
    return await build_scenario(db_url, tmp_path)


async def test_every_example_query_runs_and_is_right(scenario: Scenario, backend: str) -> None:
    per_app, active_in_run, summaries, flips = readme_queries(backend)
    assert flips.count("checked_at >=") == 1, flips  # this backend's window, only it
    _first, second = scenario.run_ids
    # The README names run 2; the scenario's second run has its own id.
    active_in_run = active_in_run.replace("run_id = 2", f"run_id = {second}")
    async with opened(scenario.url) as engine, engine.connect() as conn:
        got_per_app = [tuple(r) for r in (await conn.exec_driver_sql(per_app)).all()]
        got_active = [tuple(r) for r in (await conn.exec_driver_sql(active_in_run)).all()]
        got_flips = [tuple(r) for r in (await conn.exec_driver_sql(flips)).all()]
        got_summaries = [tuple(r) for r in (await conn.exec_driver_sql(summaries)).all()]
        counted = await conn.execute(
            select(
                session_check.c.run_id,
                session_check.c.app_id,
                func.count(),
                *(
                    func.sum(case((session_check.c.status == s, 1), else_=0))
                    for s in ("active", "inactive", "error")
                ),
            )
            .group_by(session_check.c.run_id, session_check.c.app_id)
            .order_by(session_check.c.run_id, session_check.c.app_id)
        )
        by_group_by = [tuple(int(v) if i != 1 else v for i, v in enumerate(r)) for r in counted]
        states = (await conn.execute(select(session_state))).all()
        enabled = {
            (r.app_id, r.user_id)
            for r in await conn.execute(select(audit_target).where(audit_target.c.enabled))
        }

    expected: dict[str, list[int]] = {}
    for state in states:
        if (state.app_id, state.user_id) in enabled:
            counts = expected.setdefault(state.app_id, [0, 0])
            counts[0 if state.active else 1] += 1
    assert [(app, int(a), int(i)) for app, a, i in got_per_app] == sorted(
        (app, a, i) for app, (a, i) in expected.items()
    )

    checks = await checks_by_pair(scenario.url, second)
    active = sorted((a, u, row["checked_at"]) for (a, u), row in checks.items() if row["active"])
    assert [(a, u) for a, u, _ in got_active] == [(a, u) for a, u, _ in active]
    assert len(got_active) > 0

    # Both ended runs, each app's counts as a GROUP BY of the checks gives them.
    assert [tuple(int(v) if i != 1 else v for i, v in enumerate(r)) for r in got_summaries] == (
        by_group_by
    )
    assert {r[0] for r in got_summaries} == set(scenario.run_ids)

    # Every flip of the last 7 days is one the truth arranged between the two runs.
    assert {(a, u) for a, u, _, _ in got_flips} == scenario.flipped
    assert {run_id for _, _, run_id, _ in got_flips} == {second}
    assert {bool(active) for *_, active in got_flips} == {True, False}
