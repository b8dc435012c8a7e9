"""One index fewer on session_check: the pair-history index becomes the unique key.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

UNIQUE (run_id, app_id, user_id) and the index (app_id, user_id, run_id) held the same
three columns; a unique key in history order enforces the same rule and serves a pair's
history, so every snapshot row and every answer maintains one index fewer. Lookups by run
keep the index (run_id, status, id). SQLite cannot drop a table constraint in place, so
there Alembic rebuilds the table once (batch mode).
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_session_check_app_id_user_id_run_id", table_name="session_check")
    with op.batch_alter_table("session_check") as batch:
        batch.drop_constraint("uq_session_check_run_id_app_id_user_id", type_="unique")
        batch.create_unique_constraint(
            "uq_session_check_app_id_user_id_run_id", ["app_id", "user_id", "run_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("session_check") as batch:
        batch.drop_constraint("uq_session_check_app_id_user_id_run_id", type_="unique")
        batch.create_unique_constraint(
            "uq_session_check_run_id_app_id_user_id", ["run_id", "app_id", "user_id"]
        )
    op.create_index(
        "ix_session_check_app_id_user_id_run_id", "session_check", ["app_id", "user_id", "run_id"]
    )
