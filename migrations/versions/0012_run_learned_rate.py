"""The learned rate a run started at (audit_run.learned_rate_per_second).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

NULL when the run started at the configured rate (no usable learning, or
--no-learned-rate); `audit-job runs` shows "started at the learned rate N/s". Added and
dropped with plain ALTER TABLE on every backend, as 0009 does: rebuilding audit_run on
SQLite (batch mode) would delete every check by cascade.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_run", sa.Column("learned_rate_per_second", sa.Double()))


def downgrade() -> None:
    op.drop_column("audit_run", "learned_rate_per_second")
