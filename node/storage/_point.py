"""Point reads for hot paths: one statement, no transaction object, no session.

Authentication (is this certificate revoked?), the catalog lookup every sharing call makes and
Verify's record lookup each read one row by primary key on every call. Through an async
session they cost a BEGIN, the SELECT and a COMMIT, each a hop to a worker thread; under load
those hops queue up and dominate the call.

- SQLite: a read-only connection in autocommit mode, used on the event loop's own thread.
  Each statement reads the latest committed WAL snapshot; a primary-key read takes tens of
  microseconds, less than the thread hop it replaces, so blocking the loop for it is cheaper
  than not. Writers never block WAL readers.
- PostgreSQL: a pooled connection from the async engine (asyncpg is natively async), in
  autocommit (no BEGIN and ROLLBACK around the read), the statement sent through asyncpg's
  own ``fetchrow``/``fetch`` (prepared once per connection by asyncpg's statement cache). Through
  SQLAlchemy's ``execute`` a read cost about 300 µs of CPU; this way about 130 µs (a throwaway
  timing of 3,000 reads, 32 at once, 2026-12-05). A read that fails invalidates its connection
  (a broken or cancelled asyncpg connection must not go back to the pool).

Only single statements go through here; anything that needs a consistent view across several
statements or writes uses :meth:`Database.read` / :meth:`Database.write`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

Params = Mapping[str, Any]


class PointReader(Protocol):
    async def fetch_one(self, sql: str, params: Params) -> Sequence[Any] | None: ...

    async def fetch_all(self, sql: str, params: Params) -> list[Sequence[Any]]: ...

    def close(self) -> None: ...


class SQLitePointReader:
    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            # Opened lazily: the file exists once the engine has connected and migrated.
            conn = sqlite3.connect(
                f"file:{self._path}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA busy_timeout = 2000")
            conn.execute("PRAGMA query_only = ON")
            self._conn = conn
        return self._conn

    async def fetch_one(self, sql: str, params: Params) -> Sequence[Any] | None:
        row: Sequence[Any] | None = self._connection().execute(sql, params).fetchone()
        return row

    async def fetch_all(self, sql: str, params: Params) -> list[Sequence[Any]]:
        return list(self._connection().execute(sql, params).fetchall())

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class EnginePointReader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._dialect = engine.dialect
        #: ``:name`` SQL -> (the driver's SQL with $1..$n, the parameter names in that order).
        self._statements: dict[str, tuple[str, tuple[str, ...]]] = {}

    def _statement(self, sql: str) -> tuple[str, tuple[str, ...]]:
        found = self._statements.get(sql)
        if found is None:
            compiled = text(sql).compile(dialect=self._dialect)
            found = self._statements[sql] = (str(compiled), tuple(compiled.positiontup or ()))
        return found

    async def _run(self, sql: str, params: Params, many: bool) -> Any:
        native, names = self._statement(sql)
        arguments = [params[name] for name in names]
        async with self._engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            try:
                if many:
                    return await driver.fetch(native, *arguments)
                return await driver.fetchrow(native, *arguments)
            except BaseException:
                await conn.invalidate()
                raise

    async def fetch_one(self, sql: str, params: Params) -> Sequence[Any] | None:
        row = await self._run(sql, params, many=False)
        return None if row is None else tuple(row)

    async def fetch_all(self, sql: str, params: Params) -> list[Sequence[Any]]:
        return [tuple(r) for r in await self._run(sql, params, many=True)]

    def close(self) -> None:
        pass
