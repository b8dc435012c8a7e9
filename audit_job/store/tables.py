"""The schema, as SQLAlchemy Core tables. Alembic migrations create it; column names are
public (people query them with SQL), so change them only with a migration and a note."""

from __future__ import annotations

from sqlalchemy import (
    CHAR,
    Boolean,
    CheckConstraint,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from audit_job.models import CheckStatus, EventType, Expect, RunStatus, Severity
from audit_job.store.types import BigId, UtcDateTime

ID_LENGTH = 255  # app and user ids; bounded so the schema ports to MySQL/MariaDB
MESSAGE_LENGTH = 512
REQUEST_ID_LENGTH = 128
HOST_LENGTH = 255
KEY_ID_LENGTH = 128  # with the host, under MySQL's 3072-byte key limit in utf8mb4
DIGEST_LENGTH = 64  # SHA-256, lowercase hex

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _one_of(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


audit_target = Table(
    "audit_target",
    metadata,
    Column("app_id", String(ID_LENGTH), nullable=False),
    Column("user_id", String(ID_LENGTH), nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", UtcDateTime, nullable=False),
    # What the pair's session should be (policy.py: its own expectation beats any policy).
    Column("expect", String(16), nullable=False, default=Expect.ANY.value, server_default="any"),
    PrimaryKeyConstraint("app_id", "user_id"),
    CheckConstraint(_one_of("expect", [e.value for e in Expect]), name="expect"),
)

audit_run = Table(
    "audit_run",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("trigger", String(16), nullable=False),
    Column("status", String(32), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("heartbeat_at", UtcDateTime),
    Column("total", Integer, nullable=False, default=0),
    Column("active", Integer, nullable=False, default=0),
    Column("inactive", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("retries", Integer, nullable=False, default=0),
    Column("throttled", Integer, nullable=False, default=0),
    Column("owner", String(255)),  # host:pid of the process driving the run
    Column("filters", Text),  # JSON: what the snapshot was narrowed to
    Column("message", Text),  # why it failed, was interrupted, or what was missed
    Column("scheduled_for", UtcDateTime),  # the schedule slot a daemon run belongs to
    Column("epoch", BigId),  # leadership epoch of the daemon that started it (fencing)
    Column("missed_count", Integer),
    Column("missed_first", UtcDateTime),
    Column("missed_last", UtcDateTime),
    Column("snapshot_at", UtcDateTime),  # set once every pair of the run is in session_check
    # Evidence (migration 0009): the settings that produced the run (audit_config), and
    # when prune deleted its checks (the chain then checks its links only).
    Column("config_digest", CHAR(DIGEST_LENGTH)),
    Column("pruned_at", UtcDateTime),
    # Migration 0011: the run its changes in audit_run_change are against (NULL: none kept).
    Column("changes_base_id", Integer),
    # The learned rate the run started at (migration 0012), NULL at the configured rate.
    Column("learned_rate_per_second", Double),
    CheckConstraint(_one_of("status", [s.value for s in RunStatus]), name="status"),
    UniqueConstraint("scheduled_for"),
    Index(None, "status"),
    Index(None, "started_at"),
)

# On PostgreSQL partitioned by run (store/partitions.py, migration 0011), with the primary
# key (run_id, id) there; a plain table with the key (id) elsewhere.
session_check = Table(
    "session_check",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("audit_run.id", ondelete="CASCADE"), nullable=False),
    Column("app_id", String(ID_LENGTH), nullable=False),
    Column("user_id", String(ID_LENGTH), nullable=False),
    Column("status", String(16), nullable=False, default=CheckStatus.PENDING.value),
    Column("active", Boolean),
    Column("checked_at", UtcDateTime),
    Column("attempts", Integer, nullable=False, default=0),
    Column("http_status", Integer),
    Column("status_code", Integer),
    Column("api_code", BigId),
    Column("message", String(MESSAGE_LENGTH)),
    Column("request_id", String(REQUEST_ID_LENGTH)),
    Column("latency_ms", Integer),
    Column("claimed_by", String(64)),  # unused since migration 0004 (claims are audit_claim)
    # The pair's own expectation when the run was snapshotted (audit_target.expect or the
    # source query's `expect`); NULL: none of its own (`any`), policies decide.
    Column("expect", String(16)),
    CheckConstraint(_one_of("status", [s.value for s in CheckStatus]), name="status"),
    UniqueConstraint("app_id", "user_id", "run_id"),  # one row per pair and run; a pair's history
    Index(None, "run_id", "status", "id"),  # a run's rows by status, pending ones in order
)

# Per-run, per-app counts, written when a run ends (store/summary.py), so that reports read
# a few rows instead of counting a run's checks. A run being resumed loses its rows until
# it ends again.
audit_run_summary = Table(
    "audit_run_summary",
    metadata,
    Column("run_id", Integer, ForeignKey("audit_run.id", ondelete="CASCADE"), nullable=False),
    Column("app_id", String(ID_LENGTH), nullable=False),
    Column("total", Integer, nullable=False),
    Column("active", Integer, nullable=False),
    Column("inactive", Integer, nullable=False),
    Column("error", Integer, nullable=False),
    Column("pending", Integer, nullable=False),
    PrimaryKeyConstraint("run_id", "app_id"),
)

# A run's changes against the real run before it, written when it ends (store/run_changes.py)
# so that `changes` reads a few rows instead of joining two runs of checks. `check_id` is the
# session_check row the change was found on (this run's; the base run's for a pair gone),
# which keeps the order the live comparison gives.
audit_run_change = Table(
    "audit_run_change",
    metadata,
    Column("run_id", Integer, ForeignKey("audit_run.id", ondelete="CASCADE"), nullable=False),
    Column("check_id", BigId, nullable=False),
    Column("app_id", String(ID_LENGTH), nullable=False),
    Column("user_id", String(ID_LENGTH), nullable=False),
    Column("change", String(32), nullable=False),
    Column("from_status", String(16)),
    Column("to_status", String(16)),
    Column("checked_at", UtcDateTime),
    PrimaryKeyConstraint("run_id", "check_id"),
)

session_state = Table(
    "session_state",
    metadata,
    Column("app_id", String(ID_LENGTH), nullable=False),
    Column("user_id", String(ID_LENGTH), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("checked_at", UtcDateTime, nullable=False),
    Column("changed_at", UtcDateTime, nullable=False),
    Column("run_id", Integer, nullable=False),
    PrimaryKeyConstraint("app_id", "user_id"),
    Index(None, "app_id", "active"),
)


audit_worker = Table(
    "audit_worker",
    metadata,
    Column("worker_id", String(64), primary_key=True),
    Column("run_id", Integer, ForeignKey("audit_run.id", ondelete="CASCADE"), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("heartbeat_at", UtcDateTime, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Index(None, "run_id", "heartbeat_at"),
)

# A worker's claim on a range of a run's session_check ids (store/claims.py); worker_id is
# NULL once its worker released it.
audit_claim = Table(
    "audit_claim",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("audit_run.id", ondelete="CASCADE"), nullable=False),
    Column("worker_id", String(64)),
    Column("first_id", BigId, nullable=False),
    Column("last_id", BigId, nullable=False),
    Index(None, "run_id", "last_id"),
)

leader_lease = Table(
    "leader_lease",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(255)),
    Column("epoch", BigId, nullable=False),
    Column("expires_at", UtcDateTime),
    Column("renewed_at", UtcDateTime),
)

# The rate a server was seen to sustain, per Authing host and access key id (never the
# secret), so that the next run starts there instead of finding the limit again by its 429s
# (store/learned_rate.py).
learned_rate = Table(
    "learned_rate",
    metadata,
    Column("host", String(HOST_LENGTH), nullable=False),
    Column("access_key_id", String(KEY_ID_LENGTH), nullable=False),
    Column("rate_per_second", Double, nullable=False),
    Column("server_bounded", Boolean, nullable=False),
    Column("configured_rate_per_second", Double, nullable=False),
    Column("learned_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("host", "access_key_id"),
)


# A contradiction between a pair's expected and observed state, open until an answer no
# longer contradicts it. `is_open` is TRUE while open and NULL once resolved: a UNIQUE key
# over (app_id, user_id, is_open) then allows one open violation per pair and any number of
# resolved ones, on every backend (NULLs never collide in a unique key), and serves as the
# index for finding a pair's open violation.
audit_violation = Table(
    "audit_violation",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("app_id", String(ID_LENGTH), nullable=False),
    Column("user_id", String(ID_LENGTH), nullable=False),
    Column("expected", String(16), nullable=False),
    Column("observed", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("source", String(96), nullable=False),  # target, source, policy NAME
    Column("opened_run_id", Integer, nullable=False),
    Column("opened_at", UtcDateTime, nullable=False),  # checked_at of the answer
    Column("resolved_run_id", Integer),
    Column("resolved_at", UtcDateTime),
    Column("resolution", String(16)),  # check; later also recheck
    Column("is_open", Boolean),
    CheckConstraint(_one_of("expected", ["active", "inactive"]), name="expected"),
    CheckConstraint(_one_of("observed", ["active", "inactive"]), name="observed"),
    CheckConstraint(_one_of("severity", [s.value for s in Severity]), name="severity"),
    CheckConstraint(
        "(is_open IS NOT NULL AND resolved_at IS NULL AND resolution IS NULL)"
        " OR (is_open IS NULL AND resolved_at IS NOT NULL AND resolution IS NOT NULL)",
        name="open_or_resolved",
    ),
    UniqueConstraint("app_id", "user_id", "is_open"),
    Index(None, "opened_at"),
)

# The event feed (a transactional outbox): appended in the transaction that commits what
# the event reports, read in id order by each sink. sqlite_autoincrement: SQLite must never
# reuse an id after pruning, or a sink's cursor would skip new events.
audit_event = Table(
    "audit_event",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("type", String(32), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("run_id", Integer),
    Column("app_id", String(ID_LENGTH)),
    Column("user_id", String(ID_LENGTH)),
    Column("payload", Text, nullable=False),  # JSON object: the type's `data`
    CheckConstraint(_one_of("type", [t.value for t in EventType]), name="type"),
    Index(None, "created_at"),
    sqlite_autoincrement=True,
)

# Each sink's delivery cursor and health. A deliverer holds a sink by its lease while it
# sends; `last_event_id` moves only after the receiver acknowledged, in id order.
audit_sink = Table(
    "audit_sink",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("last_event_id", BigId, nullable=False, default=0),
    Column("delivered", BigId, nullable=False, default=0),  # events acknowledged, in all
    Column("delivered_at", UtcDateTime),
    Column("failing", Boolean, nullable=False, default=False),  # stopped until `events retry`
    Column("failures", Integer, nullable=False, default=0),  # permanent refusals, in all
    Column("retries", BigId, nullable=False, default=0),  # transient failures, in all
    Column("last_error", String(MESSAGE_LENGTH)),
    Column("last_error_at", UtcDateTime),
    Column("lease_owner", String(255)),
    Column("lease_expires_at", UtcDateTime),
)


# -- evidence (audit_job/evidence, store/evidence.py) ---------------------------------------

# The effective configuration of runs, secrets removed: one row per distinct body.
audit_config = Table(
    "audit_config",
    metadata,
    Column("digest", CHAR(DIGEST_LENGTH), primary_key=True),  # SHA-256 of body
    Column("body", Text, nullable=False),  # config.json: one canonical JSON line
    Column("created_at", UtcDateTime, nullable=False),
)

# The hash chain: one link per run end, in the order runs ended. Link `seq` holds the
# digest of its run's canonical form, whose header holds `prev_digest`, the digest of
# link seq - 1. A run that is resumed after a sealed end (a failed run) gets a later link;
# its earlier one stays, superseded.
audit_chain = Table(
    "audit_chain",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("run_id", Integer, ForeignKey("audit_run.id"), nullable=False),
    Column("status", String(32), nullable=False),  # the run's status when sealed
    Column("digest", CHAR(DIGEST_LENGTH), nullable=False),
    Column("prev_digest", CHAR(DIGEST_LENGTH)),
    Column("sealed_at", UtcDateTime, nullable=False),
    Index(None, "run_id"),
)


# -- discovery and remediation (commands/discover.py, commands/kick.py) ----------------------

# Where a discovery scan stands: per listing (`users`, `logged-in:APP`), the last page whose
# rows were committed with it, so a killed scan resumes there instead of at page 1. `spec`
# is the scan's options as JSON; a scan with other options starts over.
discovery_cursor = Table(
    "discovery_cursor",
    metadata,
    Column("scan", String(64), nullable=False),
    Column("listing", String(300), nullable=False),
    Column("spec", Text, nullable=False),
    Column("page", Integer, nullable=False),
    Column("done", Boolean, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("scan", "listing"),
)

# What a sync scan saw in Authing, until its diff is applied: pairs it proposes (app_id set)
# and users that exist (app_id empty), so the diff is SQL over any number of users.
discovery_seen = Table(
    "discovery_seen",
    metadata,
    Column("scan", String(64), nullable=False),
    Column("app_id", String(ID_LENGTH), nullable=False),
    Column("user_id", String(ID_LENGTH), nullable=False),
    PrimaryKeyConstraint("scan", "app_id", "user_id"),
)

# One row per pair of a kick plan: intent (`sent`) committed before the kick-users call,
# outcome (`kicked` / `failed`) after, and the re-check that says whether the session is gone.
remediation = Table(
    "remediation",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("plan_id", String(32), nullable=False),
    Column("violation_id", BigId),
    Column("app_id", String(ID_LENGTH), nullable=False),
    Column("user_id", String(ID_LENGTH), nullable=False),
    Column("state", String(16), nullable=False),
    Column("planned_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("attempts", Integer, nullable=False, default=0),
    Column("request_id", String(REQUEST_ID_LENGTH)),
    Column("message", String(MESSAGE_LENGTH)),
    Column("actor", String(255), nullable=False),  # host:pid of the process that acted
    Column("os_user", String(128), nullable=False),
    Column("recheck_active", Boolean),
    Column("rechecked_at", UtcDateTime),
    Column("recheck_run_id", Integer),
    CheckConstraint(_one_of("state", ["planned", "sent", "kicked", "failed"]), name="state"),
    Index(None, "plan_id", "state"),
    Index(None, "violation_id"),
)
