"""Opening the database: one AsyncEngine, SQLite pragmas, errors people can read."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from audit_job.errors import ConfigError, StoreError, StoreUnavailable

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Below MySQL's default wait_timeout (8 h), after which the server drops an idle connection.
MYSQL_RECYCLE_SECONDS = 3600


def display_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable URL)"


def create_engine(
    url: str, *, connect_timeout_seconds: float = 10, pool_size: int = 5
) -> AsyncEngine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"[database] url: not a database URL: {display_url(url)}") from None
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            folder = Path(database).expanduser().resolve().parent
            if not folder.is_dir():
                raise StoreUnavailable(
                    f"cannot open database {display_url(url)}: folder {folder} does not exist"
                )
        # check_same_thread off: a batch's statements run on the event loop's thread while
        # aiosqlite's own thread for the connection is idle (store.bulk._inline).
        kwargs["connect_args"] = {
            "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
            "check_same_thread": False,
        }
    elif parsed.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {
            "timeout": connect_timeout_seconds,
            "server_settings": {"application_name": "audit-job"},
        }
        kwargs["pool_size"] = pool_size
        kwargs["pool_pre_ping"] = True
    elif parsed.get_backend_name() in ("mysql", "mariadb"):
        kwargs["connect_args"] = {"connect_timeout": max(1, math.ceil(connect_timeout_seconds))}
        if "charset" not in parsed.query:  # 4-byte characters (emoji, rare CJK) need utf8mb4
            kwargs["connect_args"]["charset"] = "utf8mb4"
        kwargs["pool_size"] = pool_size
        kwargs["pool_pre_ping"] = True
        kwargs["pool_recycle"] = MYSQL_RECYCLE_SECONDS
        # The store's concurrency rules (claims, the run-creation lock, the fence) are
        # PostgreSQL's: each statement sees what committed before it. InnoDB's default,
        # REPEATABLE READ, would keep a transaction's first snapshot after a lock wait.
        kwargs["isolation_level"] = "READ COMMITTED"
    try:
        engine = create_async_engine(parsed, **kwargs)
    except (NoSuchModuleError, ArgumentError, ImportError) as exc:  # ImportError: driver absent
        raise ConfigError(
            f"[database] url: unsupported driver in {display_url(url)} "
            "(use sqlite+aiosqlite://, postgresql+asyncpg:// or mysql+asyncmy://)"
        ) from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    elif engine.dialect.name in ("mysql", "mariadb"):
        event.listen(engine.sync_engine, "do_connect", _mysql_connect)
    return engine


def _mysql_connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
    """Connect as SQLAlchemy would, but report a connection the server closed at once as
    the driver's "lost connection" error: asyncmy raises a bare RuntimeError ("Transport
    does not expose socket instance") when the peer hangs up before its first socket
    option is set, which would escape every handler of database errors."""
    try:
        return dialect.connect(*cargs, **cparams)
    except RuntimeError as exc:
        raise dialect.loaded_dbapi.OperationalError(2013, f"Lost connection: {exc}") from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (reports) work while a run writes; foreign keys are off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except Exception as exc:
        # Switching a new file to WAL needs an exclusive lock and SQLite does not wait
        # for it: two processes opening a fresh file at once made one fail with
        # "database is locked". The mode persists in the file, so the other connection's
        # switch serves this one too (at worst this connection stays in rollback mode).
        if "locked" not in str(exc):
            raise
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def describe_db_error(exc: BaseException, url: str | None = None) -> str:
    """One line for a database failure, without the SQL and parameters."""
    where = f" {display_url(url)}" if url else ""
    orig = getattr(exc, "orig", None) or exc.__cause__ or exc
    reason = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if (
        "no such table" in reason
        or ("does not exist" in reason and "relation" in reason)
        or ("Table" in reason and "doesn't exist" in reason)  # MySQL/MariaDB, error 1146
    ):
        return f"database{where} is not initialised ({reason}); run: audit-job db upgrade"
    return f"database{where}: {reason}"


async def check_connection(engine: AsyncEngine) -> None:
    """Connect once so a wrong URL is one clear line before any work starts."""
    url = engine.url.render_as_string(hide_password=False)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (DBAPIError, OSError, SQLAlchemyError) as exc:
        raise StoreUnavailable(
            f"cannot connect to database {display_url(url)}: {_reason(exc)}"
        ) from exc
    except TimeoutError as exc:
        raise StoreUnavailable(f"cannot connect to database {display_url(url)}: timed out") from exc


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text_ = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return text_[:300]


@contextlib.asynccontextmanager
async def opened(url: str, **kwargs: Any) -> AsyncIterator[AsyncEngine]:
    """An engine that is known to connect, disposed on exit."""
    engine = create_engine(url, **kwargs)
    try:
        await check_connection(engine)
        yield engine
    finally:
        await engine.dispose()


def wrap_store_error(exc: BaseException, url: str | None = None) -> StoreError:
    return StoreError(describe_db_error(exc, url))
