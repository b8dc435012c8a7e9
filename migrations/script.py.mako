"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
from audit_job.store.dialect import table_options
from audit_job.store.types import UtcColumn

# New tables: op.create_table(..., **table_options(op.get_context().dialect)) (utf8mb4 and a
# byte-for-byte collation on MySQL/MariaDB), and UtcColumn for every time column
# (DATETIME(6) there). tests/integration/test_migrations.py checks both on MariaDB.

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
