"""What differs between SQLite and PostgreSQL, and nothing else.

Everything backend-specific the storage engine needs is one of the methods below (the Synapse
"database engine" idea): connect arguments, per-connection set-up, the statement that opens a
transaction, whether an error is a retryable conflict, a unique violation or a fault of the
database itself, and how to take a transaction-scoped lock. Nothing outside this module
branches on the backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import asyncpg
from sqlalchemy import URL, Executable, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
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

#: How long opening a PostgreSQL connection may take, and how long a caller waits for a free
#: pooled connection, before the database counts as unavailable (seconds). asyncpg's own
#: connect timeout is 60 s, long enough to hold every call on a dead server for a minute.
PG_CONNECT_TIMEOUT_S = 10.0
POOL_TIMEOUT_S = 10.0
#: PostgreSQL connections a node process keeps open, and how many more it opens for a burst
#: (closed again when returned). SQLAlchemy's default, 5, made a node under 64 calls in flight
#: open and close a connection (with its TLS handshake) for most point reads.
PG_POOL_SIZE = 20
PG_POOL_OVERFLOW = 10


class StorageError(Exception):
    """The database cannot be used as configured (bad URL, old SQLite, missing directory)."""


@dataclass(frozen=True)
class Fault:
    """An error that is the database's fault, not the code's or the request's.

    ``kind`` is a short phrase for the node log and the health status ("disk full",
    "connection lost"). ``disconnect``: the connection it happened on is unusable and must be
    dropped; the transaction, if it had not reached its commit, may be re-run once on a new one.
    """

    kind: str
    disconnect: bool = False


_CONNECTION_LOST = Fault("connection lost", disconnect=True)
_CANNOT_CONNECT = Fault("cannot connect", disconnect=True)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error``, then what it wraps: SQLAlchemy's ``orig``, the driver adapter's cause."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__


def _common_fault(error: BaseException) -> Fault | None:
    """Faults that look the same on every backend."""
    if isinstance(error, PoolTimeout):
        return Fault("no free database connection")
    if isinstance(error, asyncio.TimeoutError | TimeoutError):
        return Fault("timed out", disconnect=True)
    if isinstance(error, ConnectionError):
        return _CONNECTION_LOST
    if isinstance(error, OSError):
        return _CANNOT_CONNECT
    return None


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

    def fault(self, error: BaseException) -> Fault | None:
        """The database's fault ``error`` reports (connection lost, disk full, ...), or None
        when it is not one (a bug, a constraint, a conflict still being retried)."""

    def connection_lost(self, dbapi_connection: Any) -> bool:
        """Whether a pooled connection is already known to be dead (checked, for free, before
        each use: no round trip to the server)."""

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

    def fault(self, error: BaseException) -> Fault | None:
        for cause in _causes(error):
            code = getattr(cause, "sqlite_errorcode", None)
            if isinstance(cause, sqlite3.Error) and isinstance(code, int):
                kind = _SQLITE_FAULTS.get(code & 0xFF)
                return None if kind is None else Fault(kind)
            common = _common_fault(cause)
            if common is not None:
                return common
        return None

    def connection_lost(self, dbapi_connection: Any) -> bool:
        return False

    def lock_statement(self, name: str) -> Executable | None:
        # BEGIN IMMEDIATE already holds the one write lock of the database file.
        return None


#: SQLite primary result codes that are faults of the database file or its disk. BUSY and
#: LOCKED are retried first (is_retryable); they get here only when the lock stayed taken.
_SQLITE_FAULTS = {
    3: "permission denied",  # SQLITE_PERM
    5: "busy",  # SQLITE_BUSY: another process held the write lock past every retry
    6: "busy",  # SQLITE_LOCKED
    7: "out of memory",  # SQLITE_NOMEM
    8: "read-only",  # SQLITE_READONLY
    10: "disk I/O error",  # SQLITE_IOERR
    11: "damaged",  # SQLITE_CORRUPT
    13: "disk full",  # SQLITE_FULL: "database or disk is full"
    14: "cannot open",  # SQLITE_CANTOPEN
    15: "busy",  # SQLITE_PROTOCOL
    26: "damaged",  # SQLITE_NOTADB
}


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
        # No pool_pre_ping: SQLAlchemy's ping on asyncpg is BEGIN, a query and ROLLBACK, three
        # round trips on every checkout (it doubled the cost of a point read). Dead
        # connections are found for free instead: connection_lost() before each use, and an
        # error that fault() calls a disconnect drops the connection and re-runs the
        # transaction once (node.storage._database).
        return {
            "pool_size": PG_POOL_SIZE,
            "max_overflow": PG_POOL_OVERFLOW,
            "pool_timeout": POOL_TIMEOUT_S,
            "connect_args": {
                "timeout": PG_CONNECT_TIMEOUT_S,
                "server_settings": {"application_name": "govnode", "timezone": "UTC"},
            },
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

    def fault(self, error: BaseException) -> Fault | None:
        for cause in _causes(error):
            state = getattr(cause, "sqlstate", None)
            if isinstance(state, str) and state:
                found = _pg_fault(state, str(cause))
                if found is not None or isinstance(cause, asyncpg.PostgresError):
                    return found
            if any(refusal in str(cause) for refusal in _PG_CLIENT_REFUSALS):
                return None  # the statement, not the database: a bug (INTERNAL)
            if type(cause) in (asyncpg.InterfaceError, asyncpg.InternalClientError) or isinstance(
                cause, asyncpg.exceptions.ProtocolError
            ):
                # The connection's protocol state is broken: "connection is closed", "cannot
                # switch to state 15; another operation (2) is in progress" (the server's
                # FATAL arrived while the connection sat between two statements).
                return _CONNECTION_LOST
            common = _common_fault(cause)
            if common is not None:
                return common
        return None

    def connection_lost(self, dbapi_connection: Any) -> bool:
        driver = getattr(dbapi_connection, "driver_connection", None)
        return isinstance(driver, asyncpg.Connection) and driver.is_closed()

    def lock_statement(self, name: str) -> Executable | None:
        digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
        key = int.from_bytes(digest, "big", signed=True)
        return select(func.pg_advisory_xact_lock(key))


#: What asyncpg refuses before sending a statement, as an InterfaceError like a broken
#: connection's: a statement binding more than 32,767 parameters said the database was
#: unavailable (and health NOT_SERVING) for what is a bug of the statement.
_PG_CLIENT_REFUSALS = ("the number of query arguments cannot exceed",)

#: SQLSTATEs (exact, then by class) that are faults of the database server or its disk.
_PG_FAULTS = {
    "57014": Fault("timed out"),  # query_canceled (statement_timeout)
    "25006": Fault("read-only"),  # read_only_sql_transaction: a standby after a failover
    "3D000": _CANNOT_CONNECT,  # invalid_catalog_name: the database does not exist
    "42501": Fault("permission denied"),  # insufficient_privilege (REVOKE CONNECT, grants)
    "53100": Fault("disk full"),  # "could not extend file": No space left on device
    "53200": Fault("out of memory"),
    "53300": Fault("too many connections"),
    "53400": Fault("server limit reached"),
    "XX001": Fault("damaged"),  # data_corrupted
    "XX002": Fault("damaged"),  # index_corrupted
}
_PG_FAULT_CLASSES = {
    "08": _CONNECTION_LOST,  # connection exception
    "28": _CANNOT_CONNECT,  # invalid authorization specification
    "53": Fault("insufficient resources"),
    "57": _CONNECTION_LOST,  # operator intervention: shutdown, crash, cannot connect now
    "58": Fault("disk I/O error"),  # system error
}


def _pg_fault(state: str, message: str) -> Fault | None:
    if state == "55000" and "not currently accepting connections" in message:
        return _CANNOT_CONNECT  # ALTER DATABASE ... ALLOW_CONNECTIONS false
    return _PG_FAULTS.get(state) or _PG_FAULT_CLASSES.get(state[:2])


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
