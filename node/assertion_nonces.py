"""Replay protection for caller assertions: each assertion nonce is accepted once.

The guard's :class:`gateway.assertion.AssertionVerifier` calls :meth:`AssertionNonces.remember`
for every assertion it would otherwise accept. The nonce is kept (table ``assertion_nonce``)
until the assertion can no longer be valid; a second use is a unique violation, i.e. a replay.
Expired nonces are deleted now and then, in the same write path.
"""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete
from sqlmodel.ext.asyncio.session import AsyncSession

from node.models import AssertionNonceRow
from node.storage import Database

#: How often expired nonces are purged (seconds).
PURGE_SECONDS = 60.0


class AssertionNonces:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._last_purge = 0.0

    async def remember(self, nonce: bytes, expires_at: dt.datetime) -> bool:
        """Record ``nonce`` until ``expires_at``; False when it was already recorded."""
        purge = time.monotonic() - self._last_purge >= PURGE_SECONDS
        if purge:
            self._last_purge = time.monotonic()

        async def txn(session: AsyncSession) -> None:
            if purge:
                now = dt.datetime.now(dt.UTC)
                await session.exec(
                    delete(AssertionNonceRow).where(col(AssertionNonceRow.expires_at) < now)
                )
            session.add(AssertionNonceRow(nonce_hex=nonce.hex(), expires_at=expires_at))

        try:
            await self._db.write("assertion_nonce.remember", txn)
        except IntegrityError as error:
            if not self._db.is_unique_violation(error):
                raise
            return False
        return True
