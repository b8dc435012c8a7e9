"""Initial schema: targets, runs, checks, latest state.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from audit_job.store.dialect import table_options

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# DATETIME(6) on MySQL/MariaDB: its plain DATETIME drops the microseconds.
UTC = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
RUN_STATUSES = (
    "'running', 'succeeded', 'completed_with_errors', 'failed', 'interrupted', "
    "'skipped_overlap', 'missed'"
)
CHECK_STATUSES = "'pending', 'active', 'inactive', 'error'"


def upgrade() -> None:
    op.create_table(
        "audit_target",
        sa.Column("app_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("app_id", "user_id", name="pk_audit_target"),
        **table_options(op.get_context().dialect),
    )
    op.create_table(
        "audit_run",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("finished_at", UTC),
        sa.Column("heartbeat_at", UTC),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("active", sa.Integer(), nullable=False),
        sa.Column("inactive", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("throttled", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(255)),
        sa.Column("filters", sa.Text()),
        sa.Column("message", sa.Text()),
        sa.Column("scheduled_for", UTC),
        sa.Column("epoch", BIG_ID),
        sa.Column("missed_count", sa.Integer()),
        sa.Column("missed_first", UTC),
        sa.Column("missed_last", UTC),
        sa.PrimaryKeyConstraint("id", name="pk_audit_run"),
        sa.CheckConstraint(f"status IN ({RUN_STATUSES})", name="ck_audit_run_status"),
        sa.UniqueConstraint("scheduled_for", name="uq_audit_run_scheduled_for"),
        **table_options(op.get_context().dialect),
    )
    op.create_index("ix_audit_run_status", "audit_run", ["status"])
    op.create_index("ix_audit_run_started_at", "audit_run", ["started_at"])
    op.create_table(
        "session_check",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean()),
        sa.Column("checked_at", UTC),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("http_status", sa.Integer()),
        sa.Column("status_code", sa.Integer()),
        sa.Column("api_code", BIG_ID),
        sa.Column("message", sa.String(512)),
        sa.Column("request_id", sa.String(128)),
        sa.Column("latency_ms", sa.Integer()),
        sa.Column("claimed_by", sa.String(64)),
        sa.PrimaryKeyConstraint("id", name="pk_session_check"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["audit_run.id"],
            name="fk_session_check_run_id_audit_run",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(f"status IN ({CHECK_STATUSES})", name="ck_session_check_status"),
        sa.UniqueConstraint(
            "run_id", "app_id", "user_id", name="uq_session_check_run_id_app_id_user_id"
        ),
        **table_options(op.get_context().dialect),
    )
    op.create_index(
        "ix_session_check_run_id_status_id", "session_check", ["run_id", "status", "id"]
    )
    op.create_index(
        "ix_session_check_app_id_user_id_run_id", "session_check", ["app_id", "user_id", "run_id"]
    )
    op.create_table(
        "session_state",
        sa.Column("app_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("checked_at", UTC, nullable=False),
        sa.Column("changed_at", UTC, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "user_id", name="pk_session_state"),
        **table_options(op.get_context().dialect),
    )
    op.create_index("ix_session_state_app_id_active", "session_state", ["app_id", "active"])


def downgrade() -> None:
    op.drop_index("ix_session_state_app_id_active", table_name="session_state")
    op.drop_table("session_state")
    op.drop_index("ix_session_check_app_id_user_id_run_id", table_name="session_check")
    op.drop_index("ix_session_check_run_id_status_id", table_name="session_check")
    op.drop_table("session_check")
    op.drop_index("ix_audit_run_started_at", table_name="audit_run")
    op.drop_index("ix_audit_run_status", table_name="audit_run")
    op.drop_table("audit_run")
    op.drop_table("audit_target")
