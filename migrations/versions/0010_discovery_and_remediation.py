"""Discovery cursors, a sync's scratch rows, the remediation log and its two event types.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05

- discovery_cursor: the last committed page of each listing of a discovery scan (resume).
- discovery_seen: what a sync scan saw (proposed pairs, existing users) until its diff runs.
- remediation: one row per pair of a kick plan (intent before the call, outcome after).
- audit_event's CHECK on `type` gains remediation.applied and remediation.failed. SQLite
  cannot alter a CHECK, so there the table is rebuilt (batch mode; nothing references it,
  AUTOINCREMENT is kept); PostgreSQL and MariaDB drop and add the constraint in place.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from audit_job.store.dialect import table_options
from audit_job.store.types import UtcColumn

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = UtcColumn  # DATETIME(6) on MySQL/MariaDB
OLD_TYPES = (
    "session.activated",
    "session.deactivated",
    "violation.opened",
    "violation.resolved",
    "run.finished",
    "run.failed",
    "slot.missed",
    "slot.skipped",
)
NEW_TYPES = (*OLD_TYPES, "remediation.applied", "remediation.failed")
CHECK_NAME = "ck_audit_event_type"


def _check(types: tuple[str, ...]) -> str:
    return "type IN (" + ", ".join(f"'{t}'" for t in types) + ")"


def _event_table(types: tuple[str, ...]) -> sa.Table:
    """audit_event as 0006 made it, with the CHECK over `types` (SQLite's rebuild)."""
    return sa.Table(
        "audit_event",
        sa.MetaData(),
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("run_id", sa.Integer()),
        sa.Column("app_id", sa.String(255)),
        sa.Column("user_id", sa.String(255)),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_event"),
        sa.CheckConstraint(_check(types), name=CHECK_NAME),
        sa.Index("ix_audit_event_created_at", "created_at"),
        sqlite_autoincrement=True,
    )


def _event_types(types: tuple[str, ...]) -> None:
    if op.get_context().dialect.name == "sqlite":
        # Rebuilt from the definition with the new CHECK: rows are copied, ids kept.
        with op.batch_alter_table("audit_event", recreate="always", copy_from=_event_table(types)):
            pass
        return
    # 0006 left the constraint under a name that differs by backend (MariaDB applied the
    # naming convention once more): drop the one that exists.
    names = [
        c["name"]
        for c in sa.inspect(op.get_bind()).get_check_constraints("audit_event")
        if c["name"] and c["name"].endswith(CHECK_NAME)
    ]
    for name in names:
        op.drop_constraint(op.f(name), "audit_event", type_="check")
    # The naming convention would prefix ck_audit_event_ again: name the constraint whole.
    op.create_check_constraint(op.f(CHECK_NAME), "audit_event", _check(types))


def upgrade() -> None:
    options = table_options(op.get_context().dialect)
    op.create_table(
        "discovery_cursor",
        sa.Column("scan", sa.String(64), nullable=False),
        sa.Column("listing", sa.String(300), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("scan", "listing", name="pk_discovery_cursor"),
        **options,
    )
    op.create_table(
        "discovery_seen",
        sa.Column("scan", sa.String(64), nullable=False),
        sa.Column("app_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("scan", "app_id", "user_id", name="pk_discovery_seen"),
        **options,
    )
    op.create_table(
        "remediation",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("plan_id", sa.String(32), nullable=False),
        sa.Column("violation_id", BIG_ID),
        sa.Column("app_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("planned_at", UTC, nullable=False),
        sa.Column("sent_at", UTC),
        sa.Column("finished_at", UTC),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(128)),
        sa.Column("message", sa.String(512)),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("os_user", sa.String(128), nullable=False),
        sa.Column("recheck_active", sa.Boolean()),
        sa.Column("rechecked_at", UTC),
        sa.Column("recheck_run_id", sa.Integer()),
        sa.PrimaryKeyConstraint("id", name="pk_remediation"),
        sa.CheckConstraint(
            "state IN ('planned', 'sent', 'kicked', 'failed')", name="ck_remediation_state"
        ),
        **options,
    )
    op.create_index("ix_remediation_plan_id_state", "remediation", ["plan_id", "state"])
    op.create_index("ix_remediation_violation_id", "remediation", ["violation_id"])
    _event_types(NEW_TYPES)


def downgrade() -> None:
    op.execute(
        "DELETE FROM audit_event WHERE type IN ('remediation.applied', 'remediation.failed')"
    )
    _event_types(OLD_TYPES)
    op.drop_table("remediation")
    op.drop_table("discovery_seen")
    op.drop_table("discovery_cursor")
