"""The nonces of accepted caller assertions (node.federation.AssertionNonces), on each backend:
each accepted once however many calls present it at the same time, group-committed (calls
asking together share a transaction), kept until they expire and purged after."""

from __future__ import annotations

import asyncio
import datetime as dt
import os

import sqlalchemy as sa

from node.federation import AssertionNonces
from node.models import AssertionNonceRow
from node.storage import Database

TABLE = AssertionNonceRow.__table__  # type: ignore[attr-defined]


async def stored(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(TABLE))).scalar_one())


async def test_each_nonce_is_accepted_once_and_calls_share_transactions(database: Database) -> None:
    nonces = AssertionNonces(database)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    distinct = [os.urandom(16) for _ in range(40)]
    # Every nonce asked three times at once: one of the three is accepted.
    asked = [n for n in distinct for _ in range(3)]
    answers = await asyncio.gather(*(nonces.remember(n, until) for n in asked))
    accepted = [n for n, ok in zip(asked, answers, strict=True) if ok]
    assert sorted(accepted) == sorted(distinct)
    assert nonces.batches_written < len(asked) / 10
    # Later, alone: still a replay, and a new one still accepted.
    assert not await nonces.remember(distinct[0], until)
    assert await nonces.remember(os.urandom(16), until)
    assert await stored(database) == len(distinct) + 1
    # Stored as the ORM stores a time: read back through it, the same instant.
    async with database.engine.connect() as conn:
        row = (await conn.execute(sa.select(TABLE.c.expires_at).limit(1))).scalar_one()
    assert row == until


async def test_expired_nonces_are_purged(database: Database) -> None:
    nonces = AssertionNonces(database)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    assert await nonces.remember(os.urandom(16), past)
    # The next batch (a purge is due on a new store's first write) takes it away.
    fresh = AssertionNonces(database)
    assert await fresh.remember(os.urandom(16), past + dt.timedelta(hours=1))
    assert await stored(database) == 1
