"""Replay protection for caller assertions: each assertion nonce is accepted once.

The guard's :class:`gateway.assertion.AssertionVerifier` calls :meth:`AssertionNonces.remember`
for every assertion it would otherwise accept. The nonce is kept (table ``assertion_nonce``)
until the assertion can no longer be valid; a second use is a unique violation, i.e. a replay.
Expired nonces are deleted now and then, in the same write path. Nonces asked for while a
batch is written are written together in the next (group commit), one statement for the batch.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from node.models import AssertionNonceRow
from node.storage import Database, driver_cursor, driver_marks

#: How often expired nonces are purged (seconds).
PURGE_SECONDS = 60.0
#: Nonces written in one transaction at most.
MAX_BATCH = 256


_TABLE = AssertionNonceRow.__table__  # type: ignore[attr-defined]

#: (dialect, rows) -> the batch's INSERT for the driver's cursor, and expires_at's bind processor.
_STATEMENTS: dict[tuple[str, int], tuple[str, Callable[[Any], Any] | None]] = {}


def _statement(dialect: Any, count: int) -> tuple[str, Callable[[Any], Any] | None]:
    key = (f"{dialect.name}/{dialect.driver}/{dialect.paramstyle}", count)
    found = _STATEMENTS.get(key)
    if found is None:
        marks = driver_marks(dialect, 2 * count)
        values = ", ".join(f"({marks[i]}, {marks[i + 1]})" for i in range(0, 2 * count, 2))
        sql = (
            f"INSERT INTO {_TABLE.name} (nonce_hex, expires_at) VALUES {values} "  # noqa: S608
            "ON CONFLICT DO NOTHING RETURNING nonce_hex"
        )
        column = _TABLE.c.expires_at.type.dialect_impl(dialect)
        found = _STATEMENTS[key] = (sql, column.bind_processor(dialect))
    return found


def _insert_new(connection: Connection, rows: dict[str, dt.datetime]) -> set[str]:
    """Insert the nonces not yet present; the ones that were new. One statement, both
    backends: a nonce already recorded inserts nothing, so it is not returned. Sent to the
    driver's cursor with the column's own bind processing (the stored text is the ORM's):
    SQLAlchemy's compiling of a multi-row INSERT cost more than the database's work."""
    sql, process = _statement(connection.dialect, len(rows))
    parameters: list[Any] = []
    for nonce_hex, at in rows.items():
        parameters += (nonce_hex, process(at) if process is not None else at)
    with driver_cursor(connection) as cursor:
        cursor.execute(sql, parameters)
        return {str(row[0]) for row in cursor.fetchall()}


@dataclass
class _Asked:
    nonce_hex: str
    expires_at: dt.datetime
    future: asyncio.Future[bool]


class AssertionNonces:
    """The nonces of the assertions this node accepted, group-committed: the calls that ask
    while a batch is being written wait for the next one, so under load many forwarded calls
    share one transaction (as the audit log's writer does) instead of one each."""

    def __init__(self, db: Database, *, max_batch: int = MAX_BATCH) -> None:
        self._db = db
        self._max_batch = max_batch
        self._last_purge = 0.0
        self._pending: list[_Asked] = []
        self._writer: asyncio.Task[None] | None = None
        #: Transactions written (for tests: group commit shows as fewer than the calls).
        self.batches_written = 0

    async def remember(self, nonce: bytes, expires_at: dt.datetime) -> bool:
        """Record ``nonce`` until ``expires_at``; False when it was already recorded (or is
        recorded by another call in the same batch first)."""
        loop = asyncio.get_running_loop()
        asked = _Asked(nonce.hex(), expires_at, loop.create_future())
        self._pending.append(asked)
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write(), name="govnode.assertion_nonces")
        # A cancelled caller leaves the batch to be written for the others.
        return await asyncio.shield(asked.future)

    async def _write(self) -> None:
        await asyncio.sleep(0)  # let the calls of the same turn of the loop join the batch
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                new = await self._db.write_sync(
                    "assertion_nonce.remember", functools.partial(self._txn, batch)
                )
            except Exception as exc:  # the storage error reaches every call of the batch
                for asked in batch:
                    if not asked.future.done():
                        asked.future.set_exception(exc)
                        asked.future.add_done_callback(_retrieved)
                continue
            self.batches_written += 1
            for asked in batch:
                first = asked.nonce_hex in new
                new.discard(asked.nonce_hex)  # a second ask in the same batch is a replay
                if not asked.future.done():
                    asked.future.set_result(first)

    def _txn(self, batch: list[_Asked], connection: Connection) -> set[str]:
        now = dt.datetime.now(dt.UTC)
        if time.monotonic() - self._last_purge >= PURGE_SECONDS:
            self._last_purge = time.monotonic()
            connection.execute(sa.delete(_TABLE).where(_TABLE.c.expires_at < now))
        rows: dict[str, dt.datetime] = {}
        for asked in batch:
            rows[asked.nonce_hex] = max(asked.expires_at, rows.get(asked.nonce_hex, now))
        return _insert_new(connection, rows)


def _retrieved(future: asyncio.Future[bool]) -> None:
    """Mark a failed batch's exception as seen when its caller was cancelled meanwhile."""
    if not future.cancelled():
        future.exception()
