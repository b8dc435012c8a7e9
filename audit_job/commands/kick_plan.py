"""What `audit-job kick` would do: the pairs chosen, grouped into kick-users calls (one
user, at most 50 of that user's apps per call), and the guard on the number of users.

Sources: `--violations` (open violations expecting `inactive`, minus those a kick was
already sent for: a violation is never kicked twice), `--app`/`--user` (enabled targets;
both together name one pair), `--run ID --status active` (the pairs that run found
active). `--app`/`--user` also narrow the other two sources."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_job.client.directory import MAX_KICK_APPS
from audit_job.errors import ConfigError
from audit_job.models import CheckStatus, Expect
from audit_job.store import remediation as store
from audit_job.store import targets as target_store
from audit_job.store import violation_reads
from audit_job.store import violations as violation_store
from audit_job.store.tables import audit_run, session_check


@dataclass(frozen=True)
class Choice:
    violations: bool = False
    app_id: str | None = None
    user_id: str | None = None
    run_id: int | None = None
    status: str | None = None

    def check(self) -> None:
        sources = sum((self.violations, self.run_id is not None))
        if self.run_id is None and self.status is not None:
            raise ConfigError("kick --status: only with --run ID")
        if self.run_id is not None and self.status != CheckStatus.ACTIVE.value:
            raise ConfigError("kick --run ID: add --status active (only active pairs are kicked)")
        if sources > 1:
            raise ConfigError("kick: choose --violations or --run ID, not both")
        if not sources and self.app_id is None and self.user_id is None:
            raise ConfigError(
                "kick: nothing chosen; give --violations, --app/--user or --run ID --status active"
            )


@dataclass(frozen=True)
class Call:
    user_id: str
    app_ids: tuple[str, ...]
    violation_ids: tuple[int, ...]


@dataclass
class Plan:
    items: list[tuple[str, str, int | None]] = field(default_factory=list)  # app, user, violation

    @property
    def users(self) -> list[str]:
        return sorted({user for _, user, _ in self.items})

    @property
    def apps(self) -> list[str]:
        return sorted({app for app, _, _ in self.items})

    def calls(self) -> list[Call]:
        return calls_of(self.items)


def calls_of(items: list[tuple[str, str, int | None]]) -> list[Call]:
    """One call per user and 50 apps, in user order."""
    by_user: dict[str, list[tuple[str, int | None]]] = {}
    for app, user, violation in items:
        by_user.setdefault(user, []).append((app, violation))
    calls = []
    for user in sorted(by_user):
        apps = sorted(by_user[user])
        for start in range(0, len(apps), MAX_KICK_APPS):
            chunk = apps[start : start + MAX_KICK_APPS]
            calls.append(
                Call(
                    user,
                    tuple(app for app, _ in chunk),
                    tuple(v for _, v in chunk if v is not None),
                )
            )
    return calls


def guard(
    plan: Plan, max_users: int, *, configured: int, allow: str = "--max-users {count}"
) -> None:
    """Refuse a plan with more users than allowed (nothing has been kicked yet). `allow`
    says how to allow it where the guard is met (the daemon has no --max-users)."""
    count = len(plan.users)
    if count > max_users:
        where = (
            f"--max-users {max_users}"
            if max_users != configured
            else f"[remediation] max_users = {max_users}"
        )
        raise ConfigError(
            f"kick: the plan has {count} users, above {where}; nothing kicked "
            f"(to allow it: {allow.format(count=count)})"
        )


async def make_plan(engine: AsyncEngine, choice: Choice) -> Plan:
    choice.check()
    plan = Plan()
    if choice.violations:
        found: list[tuple[str, str, int]] = []
        async for row in violation_reads.stream(engine, open_only=True, app_id=choice.app_id):
            if row["expected"] != Expect.INACTIVE.value:
                continue
            if choice.user_id is not None and row["user_id"] != choice.user_id:
                continue
            found.append((row["app_id"], row["user_id"], int(row["id"])))
        async with engine.connect() as conn:
            done = await store.acted_on(conn, [v for _, _, v in found])
        plan.items = sorted(item for item in found if item[2] not in done)
        return plan
    if choice.run_id is not None:
        pairs = await _active_in_run(engine, choice)
    elif choice.app_id is not None and choice.user_id is not None:
        pairs = [(choice.app_id, choice.user_id)]
    else:
        pairs = [
            (str(row["app_id"]), str(row["user_id"]))
            async for row in target_store.stream(
                engine, app_id=choice.app_id, user_id=choice.user_id, enabled_only=True
            )
        ]
    async with engine.connect() as conn:
        open_ = await violation_store.open_for(conn, pairs)
    plan.items = sorted(
        (app, user, open_[(app, user)].id if (app, user) in open_ else None) for app, user in pairs
    )
    return plan


async def _active_in_run(engine: AsyncEngine, choice: Choice) -> list[tuple[str, str]]:
    c = session_check.c
    async with engine.connect() as conn:
        exists = (
            await conn.execute(select(audit_run.c.id).where(audit_run.c.id == choice.run_id))
        ).first()
        if exists is None:
            raise ConfigError(f"kick --run {choice.run_id}: no such run")
        stmt = select(c.app_id, c.user_id).where(
            c.run_id == choice.run_id, c.status == CheckStatus.ACTIVE.value
        )
        if choice.app_id is not None:
            stmt = stmt.where(c.app_id == choice.app_id)
        if choice.user_id is not None:
            stmt = stmt.where(c.user_id == choice.user_id)
        return [(row.app_id, row.user_id) for row in await conn.execute(stmt.order_by(c.id))]
