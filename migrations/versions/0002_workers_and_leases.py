"""Workers sharing a run, snapshot completion, and the daemon's leader lease.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from audit_job.store.dialect import table_options

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# DATETIME(6) on MySQL/MariaDB: its plain DATETIME drops the microseconds.
UTC = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("audit_run") as batch:
        batch.add_column(sa.Column("snapshot_at", UTC))
    op.create_table(
        "audit_worker",
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("heartbeat_at", UTC, nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name="pk_audit_worker"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["audit_run.id"],
            name="fk_audit_worker_run_id_audit_run",
            ondelete="CASCADE",
        ),
        **table_options(op.get_context().dialect),
    )
    op.create_index(
        "ix_audit_worker_run_id_heartbeat_at", "audit_worker", ["run_id", "heartbeat_at"]
    )
    op.create_table(
        "leader_lease",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(255)),
        sa.Column("epoch", BIG_ID, nullable=False),
        sa.Column("expires_at", UTC),
        sa.Column("renewed_at", UTC),
        sa.PrimaryKeyConstraint("name", name="pk_leader_lease"),
        **table_options(op.get_context().dialect),
    )


def downgrade() -> None:
    op.drop_table("leader_lease")
    # The table's indexes go with it (MySQL refuses to drop the index its foreign key uses).
    op.drop_table("audit_worker")
    with op.batch_alter_table("audit_run") as batch:
        batch.drop_column("snapshot_at")
