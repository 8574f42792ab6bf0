"""Replay protection for caller assertions: each assertion nonce is accepted once.

The guard's :class:`gateway.assertion.AssertionVerifier` calls :meth:`AssertionNonces.remember`
for every assertion it would otherwise accept. The nonce is kept (table ``assertion_nonce``)
until the assertion can no longer be valid; a second use is a unique violation, i.e. a replay.
Expired nonces are deleted now and then, in the same write path.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from node.models import AssertionNonceRow
from node.storage import Database

#: How often expired nonces are purged (seconds).
PURGE_SECONDS = 60.0


_TABLE = AssertionNonceRow.__table__  # type: ignore[attr-defined]


def _insert_new(connection: Connection, nonce_hex: str, expires_at: dt.datetime) -> bool:
    """Insert the nonce unless present; True when it was new. One statement, both backends."""
    values = {"nonce_hex": nonce_hex, "expires_at": expires_at}
    if connection.dialect.name == "postgresql":
        statement: Any = pg_insert(_TABLE).values(values).on_conflict_do_nothing()
    else:
        statement = sqlite_insert(_TABLE).values(values).on_conflict_do_nothing()
    return bool(connection.execute(statement).rowcount == 1)


class AssertionNonces:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._last_purge = 0.0

    async def remember(self, nonce: bytes, expires_at: dt.datetime) -> bool:
        """Record ``nonce`` until ``expires_at``; False when it was already recorded.

        Runs on every forwarded call, so it is one ``write_sync`` (a single hop to the writer
        thread on SQLite) with ``INSERT ... ON CONFLICT DO NOTHING``: a replay inserts nothing.
        """
        purge = time.monotonic() - self._last_purge >= PURGE_SECONDS
        if purge:
            self._last_purge = time.monotonic()
        now = dt.datetime.now(dt.UTC)

        def txn(connection: Connection) -> bool:
            if purge:
                connection.execute(sa.delete(_TABLE).where(_TABLE.c.expires_at < now))
            return _insert_new(connection, nonce.hex(), expires_at)

        return await self._db.write_sync("assertion_nonce.remember", txn)
