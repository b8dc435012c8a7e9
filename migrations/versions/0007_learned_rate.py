"""The rate each server was seen to sustain, kept across runs (learned_rate).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

One row per Authing host and access key id (never the secret): the rate the run settled at,
whether the server's throttling bounded it, the configured rate it was learned under, and
when. A new run starts there (store/learned_rate.py). A new table only: nothing else moves.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from audit_job.store.dialect import table_options
from audit_job.store.types import UtcColumn

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "learned_rate",
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("access_key_id", sa.String(128), nullable=False),
        sa.Column("rate_per_second", sa.Double(), nullable=False),
        sa.Column("server_bounded", sa.Boolean(), nullable=False),
        sa.Column("configured_rate_per_second", sa.Double(), nullable=False),
        sa.Column("learned_at", UtcColumn, nullable=False),
        sa.PrimaryKeyConstraint("host", "access_key_id", name="pk_learned_rate"),
        **table_options(op.get_context().dialect),
    )


def downgrade() -> None:
    op.drop_table("learned_rate")
