"""View latest_session_state: each pair's last conclusive answer and whether it is still a target.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

Plain SQL that SQLite, PostgreSQL and MySQL/MariaDB all accept: a LEFT JOIN, no
dialect functions. `target_enabled` is NULL once the pair is gone from audit_target.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

VIEW_SQL = """
CREATE VIEW latest_session_state AS
SELECT s.app_id AS app_id,
       s.user_id AS user_id,
       s.active AS active,
       s.checked_at AS checked_at,
       s.changed_at AS changed_at,
       s.run_id AS run_id,
       t.enabled AS target_enabled
FROM session_state s
LEFT JOIN audit_target t ON t.app_id = s.app_id AND t.user_id = s.user_id
"""


def upgrade() -> None:
    op.execute(VIEW_SQL)


def downgrade() -> None:
    op.execute("DROP VIEW latest_session_state")
