"""Workers sharing a run, snapshot completion, and the daemon's leader lease.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


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
    )


def downgrade() -> None:
    op.drop_table("leader_lease")
    op.drop_index("ix_audit_worker_run_id_heartbeat_at", table_name="audit_worker")
    op.drop_table("audit_worker")
    with op.batch_alter_table("audit_run") as batch:
        batch.drop_column("snapshot_at")
