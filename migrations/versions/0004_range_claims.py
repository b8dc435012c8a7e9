"""Claims as id ranges (audit_claim) instead of a mark on every claimed check.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

`session_check.claimed_by` is no longer written; it stays (always NULL from now on) so that
the upgrade does not rebuild the table, which SQLite would do to drop a column. Rows marked
by a worker of an older version are simply pending: a resume claims them again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from audit_job.store.dialect import table_options

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_claim",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(64)),
        sa.Column("first_id", BIG_ID, nullable=False),
        sa.Column("last_id", BIG_ID, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_claim"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["audit_run.id"],
            name="fk_audit_claim_run_id_audit_run",
            ondelete="CASCADE",
        ),
        **table_options(op.get_context().dialect),
    )
    op.create_index("ix_audit_claim_run_id_last_id", "audit_claim", ["run_id", "last_id"])


def downgrade() -> None:
    # The table's indexes go with it (MySQL refuses to drop the index its foreign key uses).
    op.drop_table("audit_claim")
