"""History in bounded time: session_check partitioned by run on PostgreSQL; per-run,
per-app counts (audit_run_summary) and a run's changes against the run before
(audit_run_change, audit_run.changes_base_id) written when a run ends.

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-06

PostgreSQL: the table becomes `PARTITION BY RANGE (run_id)` with one partition per run
(store/partitions.py says why) and a default partition. Its primary key becomes
(run_id, id), since a partitioned table's unique keys must hold the partition column; the
unique key (app_id, user_id, run_id) already does. Existing rows are copied run by run into
their partitions, then the old table is dropped; ids keep their values and the id sequence
carries on. This rewrites the whole history once: on a large database plan for the time
of a copy of session_check (about 1,000,000 rows every few seconds). The downgrade copies
the rows back into one plain table.

SQLite and MySQL/MariaDB keep session_check as it is (README: "Partitioned history").
`audit_run_summary` is made on every backend and filled for every run that is not running;
`audit_run_change` starts empty (runs that ended before are compared live, as before).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from audit_job.store.dialect import table_options
from audit_job.store.types import BigId, UtcColumn

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BIG_ID = BigId  # INTEGER on SQLite
OLD = "session_check_unpartitioned"
# (name in the final table, kind) of every index and key that has a schema-wide name
RENAMED = (
    ("pk_session_check", "constraint"),
    ("uq_session_check_app_id_user_id_run_id", "constraint"),
    ("ix_session_check_run_id_status_id", "index"),
)
SUMMARY_FILL = """
INSERT INTO audit_run_summary (run_id, app_id, total, active, inactive, error, pending)
SELECT c.run_id, c.app_id, COUNT(*),
       SUM(CASE WHEN c.status = 'active' THEN 1 ELSE 0 END),
       SUM(CASE WHEN c.status = 'inactive' THEN 1 ELSE 0 END),
       SUM(CASE WHEN c.status = 'error' THEN 1 ELSE 0 END),
       SUM(CASE WHEN c.status = 'pending' THEN 1 ELSE 0 END)
FROM session_check c JOIN audit_run r ON r.id = c.run_id
WHERE r.status <> 'running'
GROUP BY c.run_id, c.app_id
"""


def _set_aside(suffix: str) -> None:
    """Rename session_check and its schema-wide names out of the way of the new table."""
    op.execute(f"ALTER TABLE session_check RENAME TO session_check{suffix}")
    for name, kind in RENAMED:
        if kind == "constraint":
            op.execute(
                f"ALTER TABLE session_check{suffix} RENAME CONSTRAINT {name} TO {name}{suffix}"
            )
        else:
            op.execute(f"ALTER INDEX {name} RENAME TO {name}{suffix}")


def _keys(primary: str) -> None:
    op.execute(f"ALTER TABLE session_check ADD CONSTRAINT pk_session_check PRIMARY KEY ({primary})")
    op.execute(
        "ALTER TABLE session_check ADD CONSTRAINT uq_session_check_app_id_user_id_run_id "
        "UNIQUE (app_id, user_id, run_id)"
    )
    op.execute(
        "CREATE INDEX ix_session_check_run_id_status_id ON session_check (run_id, status, id)"
    )
    op.execute(
        "ALTER TABLE session_check ADD CONSTRAINT fk_session_check_run_id_audit_run "
        "FOREIGN KEY (run_id) REFERENCES audit_run (id) ON DELETE CASCADE"
    )


def _move_rows(source: str) -> None:
    """Every row of `source` into session_check, then the id sequence to the new table."""
    op.execute(f"INSERT INTO session_check SELECT * FROM {source}")
    op.execute("ALTER SEQUENCE session_check_id_seq OWNED BY session_check.id")
    op.execute(f"DROP TABLE {source}")


def _partition_pg() -> None:
    _set_aside("_unpartitioned")
    op.execute(
        f"CREATE TABLE session_check (LIKE {OLD} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
        "PARTITION BY RANGE (run_id)"
    )
    _keys("run_id, id")
    op.execute("CREATE TABLE session_check_default PARTITION OF session_check DEFAULT")
    # One partition per run that has checks, made before the copy so no row is routed to
    # the default partition (whose rows would then block the partition's creation).
    runs = op.get_bind().execute(sa.text(f"SELECT DISTINCT run_id FROM {OLD} ORDER BY 1"))
    for (run,) in runs.all():
        op.execute(
            f"CREATE TABLE session_check_r{int(run)} PARTITION OF session_check "
            f"FOR VALUES FROM ({int(run)}) TO ({int(run) + 1})"
        )
    _move_rows(OLD)


def _unpartition_pg() -> None:
    _set_aside("_partitioned")
    op.execute(
        "CREATE TABLE session_check "
        "(LIKE session_check_partitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    )
    _keys("id")
    _move_rows("session_check_partitioned")  # its partitions go with it


def upgrade() -> None:
    op.create_table(
        "audit_run_summary",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.String(255), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("active", sa.Integer(), nullable=False),
        sa.Column("inactive", sa.Integer(), nullable=False),
        sa.Column("error", sa.Integer(), nullable=False),
        sa.Column("pending", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "app_id", name="pk_audit_run_summary"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["audit_run.id"],
            name="fk_audit_run_summary_run_id_audit_run",
            ondelete="CASCADE",
        ),
        **table_options(op.get_context().dialect),
    )
    op.create_table(
        "audit_run_change",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("check_id", BIG_ID, nullable=False),
        sa.Column("app_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("change", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(16)),
        sa.Column("to_status", sa.String(16)),
        sa.Column("checked_at", UtcColumn),
        sa.PrimaryKeyConstraint("run_id", "check_id", name="pk_audit_run_change"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["audit_run.id"],
            name="fk_audit_run_change_run_id_audit_run",
            ondelete="CASCADE",
        ),
        **table_options(op.get_context().dialect),
    )
    # Plain ALTER TABLE on every backend (see 0009: no batch rebuild of audit_run on SQLite).
    op.add_column("audit_run", sa.Column("changes_base_id", sa.Integer()))
    if op.get_context().dialect.name == "postgresql":
        _partition_pg()
    op.execute(SUMMARY_FILL)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        _unpartition_pg()
    op.drop_column("audit_run", "changes_base_id")
    op.drop_table("audit_run_change")
    op.drop_table("audit_run_summary")
