"""What differs between SQLite and PostgreSQL, and nothing else.

Everything backend-specific the storage engine needs is one of the methods below (the Synapse
"database engine" idea): connect arguments, per-connection set-up, the statement that opens a
transaction, whether an error is a retryable conflict or a unique violation, and how to take a
transaction-scoped lock. Nothing outside this module branches on the backend.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar, Protocol

from sqlalchemy import URL, Executable, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

#: The minimum SQLite library: RETURNING arrived in 3.35.
MIN_SQLITE_VERSION = (3, 35, 0)

# sqlite3 primary result codes (the low byte of the extended code).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
# Extended codes for constraint failures that mean "that key is taken".
_SQLITE_CONSTRAINT_PRIMARYKEY = 1555
_SQLITE_CONSTRAINT_UNIQUE = 2067

# PostgreSQL SQLSTATEs.
_PG_SERIALIZATION_FAILURE = "40001"
_PG_DEADLOCK_DETECTED = "40P01"
_PG_UNIQUE_VIOLATION = "23505"


class StorageError(Exception):
    """The database cannot be used as configured (bad URL, old SQLite, missing directory)."""


class Backend(Protocol):
    name: ClassVar[str]

    def engine_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for ``create_async_engine``."""

    def on_connect(self, dbapi_connection: Any) -> None:
        """Set up a brand-new DBAPI connection (runs once per pooled connection)."""

    def begin_statement(self, *, write: bool) -> str | None:
        """The SQL that opens a transaction, or None to let the driver do it."""

    async def check_server(self, connection: AsyncConnection) -> None:
        """Refuse, with a clear :class:`StorageError`, a server this code cannot rely on."""

    def is_retryable(self, error: DBAPIError) -> bool:
        """Whether re-running the whole transaction may succeed (a conflict, not a bug)."""

    def is_unique_violation(self, error: DBAPIError) -> bool:
        """Whether the error is a primary-key or unique-constraint violation."""

    def lock_statement(self, name: str) -> Executable | None:
        """A statement taking a lock named ``name`` until the transaction ends, or None."""


class SQLiteBackend:
    """SQLite through aiosqlite: one file per node, WAL, writers serialised by BEGIN IMMEDIATE.

    The driver's own transaction handling is switched off (``isolation_level = None``) and the
    ``begin`` event emits our BEGIN instead, the recipe SQLAlchemy documents for pysqlite and
    aiosqlite. Writes take the write lock up front with ``BEGIN IMMEDIATE``, so a transaction
    never reads under a shared lock and then fails to upgrade it ("database is locked"); the
    busy timeout makes a second writer wait for the lock instead of failing at once.
    """

    name: ClassVar[str] = "sqlite"

    def __init__(self, url: URL) -> None:
        database = url.database or ""
        if database in ("", ":memory:") or url.query.get("mode") == "memory":
            raise StorageError(
                f"storage url {url.render_as_string(hide_password=True)!r}: SQLite needs a "
                "file (one per node), e.g. sqlite+aiosqlite:///var/lib/govnode/node.db"
            )
        directory = Path(database).expanduser().resolve().parent
        if not directory.is_dir():
            raise StorageError(
                f"storage url {url.render_as_string(hide_password=True)!r}: directory "
                f"{directory} does not exist; create it or point the url elsewhere"
            )

    def engine_kwargs(self) -> dict[str, Any]:
        return {}

    def on_connect(self, dbapi_connection: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, see begin_statement
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock another process may hold.
            for pragma in (
                "PRAGMA busy_timeout = 5000",
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = NORMAL",
                "PRAGMA foreign_keys = ON",
            ):
                cursor.execute(pragma)
        finally:
            cursor.close()

    def begin_statement(self, *, write: bool) -> str | None:
        return "BEGIN IMMEDIATE" if write else "BEGIN"

    async def check_server(self, connection: AsyncConnection) -> None:
        version = (await connection.exec_driver_sql("SELECT sqlite_version()")).scalar_one()
        parts = tuple(int(p) for p in str(version).split(".")[:3])
        if parts < MIN_SQLITE_VERSION:
            needed = ".".join(map(str, MIN_SQLITE_VERSION))
            raise StorageError(
                f"SQLite {version} is too old: govnode needs {needed} or newer (RETURNING); "
                "upgrade the system SQLite library or use PostgreSQL"
            )

    def is_retryable(self, error: DBAPIError) -> bool:
        code = getattr(error.orig, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
        message = str(error.orig).lower()
        return "database is locked" in message or "database table is locked" in message

    def is_unique_violation(self, error: DBAPIError) -> bool:
        code = getattr(error.orig, "sqlite_errorcode", None)
        return code in (_SQLITE_CONSTRAINT_PRIMARYKEY, _SQLITE_CONSTRAINT_UNIQUE)

    def lock_statement(self, name: str) -> Executable | None:
        # BEGIN IMMEDIATE already holds the one write lock of the database file.
        return None


class PostgresBackend:
    """PostgreSQL through asyncpg, at READ COMMITTED.

    Writers that read a row they will change lock it (``SELECT ... FOR UPDATE``); invariants
    over many rows use :meth:`lock_statement` (a transaction-scoped advisory lock). Deadlocks
    and serialization failures are retried by re-running the whole transaction.
    """

    name: ClassVar[str] = "postgresql"

    def __init__(self, url: URL) -> None:
        del url

    def engine_kwargs(self) -> dict[str, Any]:
        return {
            "pool_pre_ping": True,
            "connect_args": {"server_settings": {"application_name": "govnode", "timezone": "UTC"}},
        }

    def on_connect(self, dbapi_connection: Any) -> None:
        del dbapi_connection

    def begin_statement(self, *, write: bool) -> str | None:
        return None

    async def check_server(self, connection: AsyncConnection) -> None:
        return None

    def is_retryable(self, error: DBAPIError) -> bool:
        return _sqlstate(error) in (_PG_SERIALIZATION_FAILURE, _PG_DEADLOCK_DETECTED)

    def is_unique_violation(self, error: DBAPIError) -> bool:
        return _sqlstate(error) == _PG_UNIQUE_VIOLATION

    def lock_statement(self, name: str) -> Executable | None:
        digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
        key = int.from_bytes(digest, "big", signed=True)
        return select(func.pg_advisory_xact_lock(key))


def _sqlstate(error: DBAPIError) -> str | None:
    value = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    return value if isinstance(value, str) else None


def backend_for(url: URL) -> Backend:
    dialect = url.get_backend_name()
    driver = url.get_driver_name()
    if dialect == "sqlite" and driver == "aiosqlite":
        return SQLiteBackend(url)
    if dialect == "postgresql" and driver == "asyncpg":
        return PostgresBackend(url)
    raise StorageError(
        f"storage url {url.render_as_string(hide_password=True)!r} is not supported: use "
        "sqlite+aiosqlite:///path/to/node.db or postgresql+asyncpg://user@host/dbname"
    )
