"""Expected states, violations and the event feed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

- audit_target.expect (any | active | inactive, default any) and session_check.expect (the
  pair's own expectation at snapshot time, NULL for none): added columns, so neither table
  is rebuilt on upgrade (SQLite adds a column in place; PostgreSQL fills the default
  without a rewrite since version 11).
- audit_violation: at most one open violation per pair, enforced by UNIQUE (app_id,
  user_id, is_open) with is_open TRUE while open and NULL once resolved.
- audit_event: the event feed; AUTOINCREMENT on SQLite so that an id is never reused.
- audit_sink: each sink's delivery cursor, health and lease.
Only bounded VARCHARs, integers, booleans, timestamps and TEXT: portable to MySQL/MariaDB.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from audit_job.store.dialect import table_options
from audit_job.store.types import UtcColumn

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = UtcColumn  # DATETIME(6) on MySQL/MariaDB
EXPECT_CHECK = "expect IN ('any', 'active', 'inactive')"
EVENT_TYPES = (
    "'session.activated', 'session.deactivated', 'violation.opened', 'violation.resolved', "
    "'run.finished', 'run.failed', 'slot.missed', 'slot.skipped'"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # A column constraint rides along with ADD COLUMN; a table constraint would make
        # Alembic copy the whole table (a million targets) into a new one.
        op.execute(
            "ALTER TABLE audit_target ADD COLUMN expect VARCHAR(16) DEFAULT 'any' NOT NULL "
            f"CONSTRAINT ck_audit_target_expect CHECK ({EXPECT_CHECK})"
        )
    else:
        op.add_column(
            "audit_target",
            sa.Column("expect", sa.String(16), nullable=False, server_default="any"),
        )
        op.create_check_constraint("ck_audit_target_expect", "audit_target", EXPECT_CHECK)
    op.add_column("session_check", sa.Column("expect", sa.String(16)))
    op.create_table(
        "audit_violation",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("app_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("expected", sa.String(16), nullable=False),
        sa.Column("observed", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("source", sa.String(96), nullable=False),
        sa.Column("opened_run_id", sa.Integer(), nullable=False),
        sa.Column("opened_at", UTC, nullable=False),
        sa.Column("resolved_run_id", sa.Integer()),
        sa.Column("resolved_at", UTC),
        sa.Column("resolution", sa.String(16)),
        sa.Column("is_open", sa.Boolean()),
        sa.PrimaryKeyConstraint("id", name="pk_audit_violation"),
        sa.CheckConstraint(
            "expected IN ('active', 'inactive')", name="ck_audit_violation_expected"
        ),
        sa.CheckConstraint(
            "observed IN ('active', 'inactive')", name="ck_audit_violation_observed"
        ),
        sa.CheckConstraint(
            "severity IN ('info', 'warning', 'critical')", name="ck_audit_violation_severity"
        ),
        sa.CheckConstraint(
            "(is_open IS NOT NULL AND resolved_at IS NULL AND resolution IS NULL)"
            " OR (is_open IS NULL AND resolved_at IS NOT NULL AND resolution IS NOT NULL)",
            name="ck_audit_violation_open_or_resolved",
        ),
        sa.UniqueConstraint(
            "app_id", "user_id", "is_open", name="uq_audit_violation_app_id_user_id_is_open"
        ),
        **table_options(op.get_context().dialect),
    )
    op.create_index("ix_audit_violation_opened_at", "audit_violation", ["opened_at"])
    op.create_table(
        "audit_event",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("run_id", sa.Integer()),
        sa.Column("app_id", sa.String(255)),
        sa.Column("user_id", sa.String(255)),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_event"),
        sa.CheckConstraint(f"type IN ({EVENT_TYPES})", name="ck_audit_event_type"),
        sqlite_autoincrement=True,
        **table_options(op.get_context().dialect),
    )
    op.create_index("ix_audit_event_created_at", "audit_event", ["created_at"])
    op.create_table(
        "audit_sink",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("last_event_id", BIG_ID, nullable=False),
        sa.Column("delivered", BIG_ID, nullable=False),
        sa.Column("delivered_at", UTC),
        sa.Column("failing", sa.Boolean(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("retries", BIG_ID, nullable=False),
        sa.Column("last_error", sa.String(512)),
        sa.Column("last_error_at", UTC),
        sa.Column("lease_owner", sa.String(255)),
        sa.Column("lease_expires_at", UTC),
        sa.PrimaryKeyConstraint("name", name="pk_audit_sink"),
        **table_options(op.get_context().dialect),
    )


def downgrade() -> None:
    op.drop_table("audit_sink")
    op.drop_index("ix_audit_event_created_at", table_name="audit_event")
    op.drop_table("audit_event")
    op.drop_index("ix_audit_violation_opened_at", table_name="audit_violation")
    op.drop_table("audit_violation")
    op.drop_column("session_check", "expect")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite 3.35+ drops a column together with its own column constraint, in place
        # (a rebuilt table would also break the latest_session_state view).
        op.execute("ALTER TABLE audit_target DROP COLUMN expect")
    else:
        op.drop_constraint("ck_audit_target_expect", "audit_target", type_="check")
        op.drop_column("audit_target", "expect")
