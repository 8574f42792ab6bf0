"""The storage engine: an async SQLAlchemy engine plus named, retried transactions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool
from sqlmodel.ext.asyncio.session import AsyncSession

from node.errors import StorageUnavailable
from node.storage import _migrations
from node.storage._backends import Backend, Fault, StorageError, backend_for
from node.storage._health import StorageFault, StorageHealth
from node.storage._point import EnginePointReader, Params, PointReader, SQLitePointReader
from node.storage._types import utc_now

T = TypeVar("T")
Transaction = Callable[[AsyncSession], Awaitable[T]]
#: A write done in Core statements on a synchronous connection (see :meth:`Database.write_sync`).
SyncTransaction = Callable[[Connection], T]

log = structlog.get_logger(__name__)

#: How long :meth:`Database.close` waits for transactions under way to end.
CLOSE_WAIT_S = 10.0

# Execution option telling the "begin" event that this connection will write.
_WRITE_OPTION = "govnode_write"

#: The node_meta row the health probe writes (see :meth:`Database.probe`).
PROBE_KEY = "storage.health_probe"


class _Progress:
    """How far one transaction attempt got: a connection lost before the commit was sent
    leaves nothing behind and may be re-run; lost during the commit, the outcome is unknown."""

    committing = False


class Database:
    """One node's database: SQLite (default, one file) or PostgreSQL, same code on both.

    Work is done in named transactions, :meth:`write` and :meth:`read`: a function that gets
    its own session and runs as one unit, committed at the end, rolled back on any exception
    and, when the database reports a conflict (SQLite busy, PostgreSQL deadlock or
    serialization failure), re-run from scratch. The function must therefore be safe to run
    again: no side effects outside the session.

    Faults of the database itself (connection lost, server gone, disk full, read-only, no
    answer in time: :meth:`Backend.fault`) leave here as :class:`StorageUnavailable`, which
    callers see as UNAVAILABLE, and are recorded in :attr:`health`. A connection found dead
    is dropped and a transaction that had not reached its commit is re-run once on a fresh
    one, so a PostgreSQL restart or failover costs callers nothing but the reconnection.
    """

    max_attempts = 6
    _backoff_base_s = 0.02
    _backoff_cap_s = 1.0

    def __init__(self, engine: AsyncEngine, backend: Backend, url: URL) -> None:
        self._engine = engine
        self._backend = backend
        self._url = url
        self._attempts: set[asyncio.Future[Any]] = set()  # transaction attempts under way
        self._closed = False
        #: Whether the database can be written, from the faults met and the probes' outcomes.
        self.health = StorageHealth()
        write_engine = engine.execution_options(**{_WRITE_OPTION: True})
        self._write_engine = write_engine
        self._writes = async_sessionmaker(write_engine, class_=AsyncSession, expire_on_commit=False)
        self._reads = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
        # SQLite: bulk writes run on a synchronous engine in one dedicated thread, so a whole
        # batch is one hop to that thread instead of one hop per statement (see write_sync).
        self._sync_writer: Engine | None = None
        self._writer_thread: ThreadPoolExecutor | None = None
        if backend.name == "sqlite":
            sync = create_engine(url.set(drivername="sqlite"), poolclass=StaticPool)
            event.listen(sync, "connect", lambda dbapi, _rec: backend.on_connect(dbapi))
            event.listen(sync, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
            self._sync_writer = sync
            self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="govnode-writer")
        self._point: PointReader = (
            SQLitePointReader(url.database)
            if backend.name == "sqlite" and url.database
            else EnginePointReader(engine)
        )

    @classmethod
    async def open(cls, url: str | URL, *, echo: bool = False) -> Database:
        """Open (not migrate) the database at ``url`` and check the server is usable."""
        parsed = make_url(url)
        backend = backend_for(parsed)
        engine = create_async_engine(parsed, echo=echo, **backend.engine_kwargs())
        _install_events(engine, backend)
        db = cls(engine, backend, parsed)
        try:
            async with engine.connect() as connection:
                await backend.check_server(connection)
        except BaseException:
            await engine.dispose()
            raise
        log.debug("storage.opened", backend=backend.name, url=db.url)
        return db

    async def close(self) -> None:
        """Close the database once the transactions under way have ended (bounded); no new
        transaction starts meanwhile."""
        self._closed = True
        if self._attempts:
            _, late = await asyncio.wait(set(self._attempts), timeout=CLOSE_WAIT_S)
            if late:
                log.warning("storage.close_with_transactions_running", count=len(late))
        self._point.close()
        if self._writer_thread is not None and self._sync_writer is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._writer_thread, self._sync_writer.dispose
            )
            self._writer_thread.shutdown(wait=True)
        await self._engine.dispose()

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._backend.name

    @property
    def url(self) -> str:
        """The database URL, password hidden (safe to log)."""
        return self._url.render_as_string(hide_password=True)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    # --- transactions ---------------------------------------------------------------------

    async def write(self, name: str, fn: Transaction[T]) -> T:
        """Run ``fn`` in one write transaction (BEGIN IMMEDIATE on SQLite), retried as a whole.

        On PostgreSQL the transaction runs at READ COMMITTED: lock rows you read and then change
        (``select(...).with_for_update()``, a no-op on SQLite where the writer already holds the
        database's write lock) and use :meth:`lock` for invariants spanning many rows.
        """
        return await self._run(name, fn, write=True)

    async def write_sync(self, name: str, fn: SyncTransaction[T]) -> T:
        """Run ``fn(connection)`` in one write transaction, retried as a whole.

        For bulk and hot writes (audit batches, Submit batches): ``fn`` issues Core statements
        on a synchronous :class:`~sqlalchemy.Connection`. On SQLite it runs in the node's one
        writer thread with ``BEGIN IMMEDIATE``; on PostgreSQL through the async engine
        (``AsyncConnection.run_sync``). Same function, same semantics, both backends.
        """

        async def attempt(progress: _Progress) -> T:
            if self._sync_writer is not None and self._writer_thread is not None:
                return await asyncio.get_running_loop().run_in_executor(
                    self._writer_thread, _in_transaction, self._sync_writer, fn, progress
                )
            async with self._write_engine.begin() as connection:
                result = await connection.run_sync(fn)
                progress.committing = True
            return result

        return await self._retrying(name, attempt)

    async def read(self, name: str, fn: Transaction[T]) -> T:
        """Run ``fn`` in one read transaction (a consistent snapshot on SQLite)."""
        return await self._run(name, fn, write=False)

    async def lock(self, session: AsyncSession | AsyncConnection, name: str) -> None:
        """Hold the lock ``name`` until the current write transaction ends.

        Serialises writers that maintain one invariant over many rows (such as a gap-free
        sequence). On SQLite every writer already holds the database write lock.
        """
        statement = self._backend.lock_statement(name)
        if statement is None:
            return
        connection = await session.connection() if isinstance(session, AsyncSession) else session
        await connection.execute(statement)

    async def fetch_one(self, sql: str, params: Params) -> Sequence[Any] | None:
        """One row from one statement, for hot paths (see :mod:`node.storage._point`).

        ``sql`` uses ``:name`` parameters and must be valid on SQLite and PostgreSQL alike.
        """
        try:
            return await self._point.fetch_one(sql, params)
        except Exception as error:
            self._point_failed(sql, error)
        return await self._point_retry(self._point.fetch_one, sql, params)

    async def fetch_all(self, sql: str, params: Params) -> list[Sequence[Any]]:
        """Every row of one statement, for hot paths; same rules as :meth:`fetch_one`."""
        try:
            return await self._point.fetch_all(sql, params)
        except Exception as error:
            self._point_failed(sql, error)
        return await self._point_retry(self._point.fetch_all, sql, params)

    def _point_failed(self, sql: str, error: Exception) -> None:
        """A point read failed: re-raise it, as StorageUnavailable if it is a fault of the
        database; return (to read again, once) if its connection was found dead."""
        fault = self._backend.fault(error)
        if fault is None:
            raise error
        if not fault.disconnect:
            raise self._unavailable(_statement_name(sql), fault, error) from error
        log.info("storage.reconnecting", statement=_statement_name(sql), error=_cause(error))

    async def _point_retry(
        self, read: Callable[[str, Params], Awaitable[T]], sql: str, params: Params
    ) -> T:
        try:
            return await read(sql, params)
        except Exception as error:
            fault = self._backend.fault(error)
            if fault is None:
                raise
            raise self._unavailable(_statement_name(sql), fault, error) from error

    def lock_sync(self, connection: Connection, name: str) -> None:
        """:meth:`lock` inside a :meth:`write_sync` function."""
        statement = self._backend.lock_statement(name)
        if statement is not None:
            connection.execute(statement)

    def is_unique_violation(self, error: DBAPIError) -> bool:
        return self._backend.is_unique_violation(error)

    async def _run(self, name: str, fn: Transaction[T], *, write: bool) -> T:
        sessions = self._writes if write else self._reads

        async def attempt(progress: _Progress) -> T:
            async with sessions() as session:
                async with session.begin():
                    result = await fn(session)
                    progress.committing = True  # the commit is sent as the block ends
                return result

        return await self._retrying(name, attempt)

    async def _retrying(self, name: str, attempt: Callable[[_Progress], Awaitable[T]]) -> T:
        """Run ``attempt`` until it succeeds, re-running it from scratch (jittered exponential
        backoff) while the database reports a retryable conflict, at most max_attempts times,
        and once more, at once, if its connection was found dead before the commit. A fault of
        the database raises :class:`StorageUnavailable`."""
        tries = 1
        reconnected = False
        while True:
            if self._closed:
                raise StorageError(f"transaction {name}: the database is closed (node stopping)")
            progress = _Progress()
            try:
                return await _to_the_end(attempt(progress), self._attempts)
            except Exception as error:
                retryable = isinstance(error, DBAPIError) and self._backend.is_retryable(error)
                if not retryable or tries >= self.max_attempts:
                    fault = self._backend.fault(error)
                    if fault is None:
                        raise
                    if fault.disconnect and not reconnected and not progress.committing:
                        reconnected = True
                        log.info("storage.reconnecting", transaction=name, error=_cause(error))
                        continue
                    raise self._unavailable(name, fault, error) from error
                assert isinstance(error, DBAPIError)
                ceiling = min(self._backoff_cap_s, self._backoff_base_s * 2**tries)
                delay = random.uniform(0, ceiling)
                log.warning(
                    "storage.transaction_retry",
                    transaction=name,
                    attempt=tries,
                    delay_s=round(delay, 3),
                    error=str(error.orig),
                    backend=self._backend.name,
                )
                tries += 1
                await asyncio.sleep(delay)

    def _unavailable(self, operation: str, fault: Fault, error: BaseException) -> Exception:
        """The caller's exception for a fault of the database, noted in :attr:`health`."""
        cause = _cause(error)
        self.health.failed(StorageFault(kind=fault.kind, cause=cause, operation=operation))
        return StorageUnavailable(operation, fault.kind, cause)

    # --- health ---------------------------------------------------------------------------

    async def probe(self, size: int = 0) -> None:
        """Write ``size`` bytes (and a time stamp) to the database and commit, through the path
        Submit and the audit log write by (:meth:`write_sync`); on success the database counts
        as writable again (:attr:`health`), unless another write failed meanwhile. Raises
        :class:`StorageUnavailable` if it is not writable.

        The value is random hex, which SQLite stores as it is and PostgreSQL's TOAST hardly
        compresses, so a probe of ``size`` bytes needs about that much room; it replaces the
        previous probe's, so probes do not grow the database."""
        value = f"{utc_now().isoformat()} {os.urandom(size // 2).hex()}"
        statement = text(
            "INSERT INTO node_meta (key, value) VALUES (:key, :value)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )

        def txn(connection: Connection) -> None:
            connection.execute(statement, {"key": PROBE_KEY, "value": value})

        faults_before = self.health.faults
        await self.write_sync("storage.health_probe", txn)
        self.health.recovered(faults_before)

    # --- schema ---------------------------------------------------------------------------

    async def migrate(self) -> None:
        """Bring the schema to the newest migration (Alembic ``upgrade head``); idempotent."""
        async with self._write_engine.begin() as connection:
            await self.lock(connection, "govnode.migrations")
            before = await connection.run_sync(_migrations.current_revision)
            await connection.run_sync(_migrations.upgrade_head)
            after = await connection.run_sync(_migrations.current_revision)
        if before != after:
            log.info("storage.migrated", url=self.url, from_revision=before, to_revision=after)

    async def current_revision(self) -> str | None:
        """The schema revision the database is at, or None before the first migration."""
        async with self._engine.connect() as connection:
            return await connection.run_sync(_migrations.current_revision)


async def _to_the_end(attempt: Awaitable[T], running: set[asyncio.Future[Any]]) -> T:
    """Await one transaction attempt in a task of its own. If the caller is cancelled meanwhile
    (a stream ending, a node stopping), the attempt still runs to its end, commit or rollback,
    before the cancellation passes on: cancelling a task inside an async session can leave its
    pooled connection checked out, never returned, and closed only by the garbage collector
    after the engine is gone. Transactions are short, so the caller waits little. ``running``
    holds the attempts under way, which :meth:`Database.close` waits for (a caller that is
    itself a task nobody waits for, such as gRPC's reader of a request stream, cannot)."""
    task = asyncio.ensure_future(attempt)
    running.add(task)
    task.add_done_callback(running.discard)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the caller was cancelled, the outcome is dropped
        raise


def _in_transaction(engine: Engine, fn: SyncTransaction[T], progress: _Progress) -> T:
    with engine.begin() as conn:
        result = fn(conn)
        progress.committing = True
    return result


@contextlib.contextmanager
def driver_cursor(connection: Connection) -> Iterator[Any]:
    """The driver's own cursor on ``connection``, inside a :meth:`Database.write_sync` function.

    For the hottest write (the audit batch, once per call), where SQLAlchemy's work per
    statement (execution context, events, result set-up: about 35 µs each) costs more than
    SQLite's. The statements run in the transaction ``connection`` holds, in the dialect's
    parameter style; a driver error leaves as SQLAlchemy's :class:`DBAPIError`, as from
    ``connection.execute``, so conflicts are retried and faults reported as before.
    """
    dialect = connection.dialect
    base = dialect.loaded_dbapi.Error
    cursor = connection.connection.cursor()
    try:
        yield cursor
    except base as error:
        raise DBAPIError.instance(None, None, error, base, dialect=dialect) from error
    finally:
        cursor.close()


def insert_rows(
    connection: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """INSERT ``rows`` (values in ``columns`` order) into ``table`` with one executemany of
    the driver, in the transaction ``connection`` holds.

    For bulk writes of thousands of rows (catalog sync's replicas): SQLAlchemy's Core insert
    converts each parameter of each row in its execution context, which cost more than the
    database's own insert. Here each value goes through the same bind processor (the stored
    values are the same as the Core insert's), in one pass over the rows, and the statement
    is compiled once per table, columns and dialect.
    """
    if not rows:
        return
    dialect = connection.dialect
    key = (table.name, *columns, dialect.name, dialect.driver, dialect.paramstyle)
    found = _INSERTS.get(key)
    if found is None:
        statement = sa.insert(table).values({name: sa.bindparam(name) for name in columns})
        compiled = statement.compile(dialect=dialect)
        if list(compiled.positiontup or ()) != list(columns):  # pragma: no cover - a bug
            raise RuntimeError(f"insert into {table.name}: parameters out of column order")
        made: list[tuple[int, Callable[[Any], Any]]] = []
        for i, name in enumerate(columns):
            process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                made.append((i, process))
        found = _INSERTS[key] = (str(compiled), tuple(made))
    sql, processors = found
    if processors:
        converted = []
        for row in rows:
            values = list(row)
            for i, convert in processors:
                values[i] = convert(values[i])
            converted.append(tuple(values))
        rows = converted
    connection.exec_driver_sql(sql, list(rows))


_INSERTS: dict[tuple[str, ...], tuple[str, tuple[tuple[int, Callable[[Any], Any]], ...]]] = {}


def driver_marks(dialect: Any, count: int) -> list[str]:
    """``count`` parameter markers in the driver's own style, for SQL sent to
    :func:`driver_cursor` (positional rows: ``?``, ``$1``, ``:1`` or ``%s``)."""
    style = dialect.paramstyle
    if style == "qmark":
        return ["?"] * count
    if style == "numeric_dollar":
        return [f"${i}" for i in range(1, count + 1)]
    if style == "numeric":
        return [f":{i}" for i in range(1, count + 1)]
    if style == "format":
        return ["%s"] * count
    # pragma: no cover - no supported driver uses another style with positional rows
    raise RuntimeError(f"unsupported DB-API paramstyle {style!r} for the driver's cursor")


def _cause(error: BaseException) -> str:
    """The driver's own words for ``error``, for the node log (never for a caller)."""
    orig = getattr(error, "orig", None)
    inner = orig if isinstance(orig, BaseException) else error
    text_ = str(inner).strip() or type(inner).__name__
    return f"{type(inner).__name__}: {text_}"[:1000]


def _statement_name(sql: str) -> str:
    """A point read as the log names it: its statement, shortened."""
    return "point read: " + " ".join(sql.split())[:80]


def _install_events(engine: AsyncEngine, backend: Backend) -> None:
    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        backend.on_connect(dbapi_connection)

    def on_checkout(dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
        # Free (no round trip): a connection the server closed while it sat in the pool is
        # replaced before use. The pool retries the checkout with a new connection.
        if backend.connection_lost(dbapi_connection):
            raise DisconnectionError("the database closed this pooled connection")

    def on_error(context: ExceptionContext) -> None:
        # Errors SQLAlchemy does not know mean the connection is dead (asyncpg's protocol
        # state errors after the server's FATAL): drop it rather than return it to the pool.
        fault = backend.fault(context.original_exception)
        if fault is not None and fault.disconnect:
            context.is_disconnect = True

    def on_begin(connection: Connection) -> None:
        write = bool(connection.get_execution_options().get(_WRITE_OPTION, False))
        statement = backend.begin_statement(write=write)
        if statement is not None:
            connection.exec_driver_sql(statement)

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "checkout", on_checkout)
    event.listen(engine.sync_engine, "handle_error", on_error)
    event.listen(engine.sync_engine, "begin", on_begin)
