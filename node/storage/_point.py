"""Point reads for hot paths: one statement, no transaction object, no session.

Authentication (is this certificate revoked?), the catalog lookup every sharing call makes and
Verify's record lookup each read one row by primary key on every call. Through an async
session they cost a BEGIN, the SELECT and a COMMIT, each a hop to a worker thread; under load
those hops queue up and dominate the call.

- SQLite: a read-only connection in autocommit mode, used on the event loop's own thread.
  Each statement reads the latest committed WAL snapshot; a primary-key read takes tens of
  microseconds, less than the thread hop it replaces, so blocking the loop for it is cheaper
  than not. Writers never block WAL readers.
- PostgreSQL: a pooled connection from the async engine (asyncpg is natively async).

Only single statements go through here; anything that needs a consistent view across several
statements or writes uses :meth:`Database.read` / :meth:`Database.write`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import TextClause, text
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
        self._engine = engine
        self._statements: dict[str, TextClause] = {}

    def _statement(self, sql: str) -> TextClause:
        statement = self._statements.get(sql)
        if statement is None:
            statement = self._statements[sql] = text(sql)
        return statement

    async def fetch_one(self, sql: str, params: Params) -> Sequence[Any] | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(self._statement(sql), dict(params))).first()
        return None if row is None else tuple(row)

    async def fetch_all(self, sql: str, params: Params) -> list[Sequence[Any]]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(self._statement(sql), dict(params))).all()
        return [tuple(r) for r in rows]

    def close(self) -> None:
        pass
