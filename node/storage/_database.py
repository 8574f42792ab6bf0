"""The storage engine: an async SQLAlchemy engine plus named, retried transactions."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool
from sqlmodel.ext.asyncio.session import AsyncSession

from node.storage import _migrations
from node.storage._backends import Backend, StorageError, backend_for
from node.storage._point import EnginePointReader, Params, PointReader, SQLitePointReader

T = TypeVar("T")
Transaction = Callable[[AsyncSession], Awaitable[T]]
#: A write done in Core statements on a synchronous connection (see :meth:`Database.write_sync`).
SyncTransaction = Callable[[Connection], T]

log = structlog.get_logger(__name__)

#: How long :meth:`Database.close` waits for transactions under way to end.
CLOSE_WAIT_S = 10.0

# Execution option telling the "begin" event that this connection will write.
_WRITE_OPTION = "govnode_write"


class Database:
    """One node's database: SQLite (default, one file) or PostgreSQL, same code on both.

    Work is done in named transactions, :meth:`write` and :meth:`read`: a function that gets
    its own session and runs as one unit, committed at the end, rolled back on any exception
    and, when the database reports a conflict (SQLite busy, PostgreSQL deadlock or
    serialization failure), re-run from scratch. The function must therefore be safe to run
    again: no side effects outside the session.
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
        async def attempt() -> T:
            if self._sync_writer is not None and self._writer_thread is not None:
                return await asyncio.get_running_loop().run_in_executor(
                    self._writer_thread, _in_transaction, self._sync_writer, fn
                )
            async with self._write_engine.begin() as connection:
                return await connection.run_sync(fn)

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
        return await self._point.fetch_one(sql, params)

    async def fetch_all(self, sql: str, params: Params) -> list[Sequence[Any]]:
        """Every row of one statement, for hot paths; same rules as :meth:`fetch_one`."""
        return await self._point.fetch_all(sql, params)

    def lock_sync(self, connection: Connection, name: str) -> None:
        """:meth:`lock` inside a :meth:`write_sync` function."""
        statement = self._backend.lock_statement(name)
        if statement is not None:
            connection.execute(statement)

    def is_unique_violation(self, error: DBAPIError) -> bool:
        return self._backend.is_unique_violation(error)

    async def _run(self, name: str, fn: Transaction[T], *, write: bool) -> T:
        sessions = self._writes if write else self._reads

        async def attempt() -> T:
            async with sessions() as session, session.begin():
                return await fn(session)

        return await self._retrying(name, attempt)

    async def _retrying(self, name: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it succeeds, re-running it from scratch (jittered exponential
        backoff) while the database reports a retryable conflict, at most max_attempts times."""
        tries = 1
        while True:
            if self._closed:
                raise StorageError(f"transaction {name}: the database is closed (node stopping)")
            try:
                return await _to_the_end(attempt(), self._attempts)
            except DBAPIError as error:
                if not self._backend.is_retryable(error) or tries >= self.max_attempts:
                    raise
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


def _in_transaction(engine: Engine, fn: SyncTransaction[T]) -> T:
    with engine.begin() as conn:
        return fn(conn)


def _install_events(engine: AsyncEngine, backend: Backend) -> None:
    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        backend.on_connect(dbapi_connection)

    def on_begin(connection: Connection) -> None:
        write = bool(connection.get_execution_options().get(_WRITE_OPTION, False))
        statement = backend.begin_statement(write=write)
        if statement is not None:
            connection.exec_driver_sql(statement)

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "begin", on_begin)
