"""Evidence: the configuration of each run, the hash chain over runs, pruned runs marked.

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-04

`audit_config` keeps each distinct effective configuration (secrets removed) once, by its
SHA-256; `audit_run.config_digest` points at it. `audit_chain` holds one link per run end
(its digest and the previous link's). `audit_run.pruned_at` tells the chain check that a
run's checks were deleted on purpose.

Runs that ended before this revision stay outside the chain (it starts with the first run
to end after the upgrade). The two audit_run columns are added and dropped with plain
ALTER TABLE on every backend: rebuilding audit_run on SQLite (batch mode) would drop the
parent of session_check, which with foreign keys on deletes every check by cascade.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from audit_job.store.dialect import table_options
from audit_job.store.types import UtcColumn

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None

UTC = UtcColumn  # DATETIME(6) on MySQL/MariaDB
DIGEST = sa.CHAR(64)


def upgrade() -> None:
    op.add_column("audit_run", sa.Column("config_digest", DIGEST))
    op.add_column("audit_run", sa.Column("pruned_at", UTC))
    op.create_table(
        "audit_config",
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_audit_config"),
        **table_options(op.get_context().dialect),
    )
    op.create_table(
        "audit_chain",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("prev_digest", DIGEST),
        sa.Column("sealed_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_chain"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["audit_run.id"], name="fk_audit_chain_run_id_audit_run"
        ),
        **table_options(op.get_context().dialect),
    )
    op.create_index("ix_audit_chain_run_id", "audit_chain", ["run_id"])


def downgrade() -> None:
    # The table goes with its index (MySQL refuses to drop an index a foreign key uses).
    op.drop_table("audit_chain")
    op.drop_table("audit_config")
    # SQLite 3.35+ drops a plain column in place (no table rebuild, see above).
    op.drop_column("audit_run", "pruned_at")
    op.drop_column("audit_run", "config_digest")
