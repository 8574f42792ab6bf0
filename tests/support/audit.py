"""Audit records for tests, and what an attacker with the database would do to them."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from sqlalchemy import select, text

from bench.archived_log import audit_entry
from node.audit import AuditLog
from node.audit._log import _ENTRY_COLUMNS, AuditEntry, record_hash
from node.models import AuditRecordRow
from node.storage import Database

T0 = dt.datetime(2026, 12, 4, 2, 0, tzinfo=dt.UTC)


def entry(n: int) -> AuditEntry:
    return audit_entry(n, T0 + dt.timedelta(seconds=n))


async def append_many(log: AuditLog, start: int, count: int) -> None:
    """``count`` records, in concurrent groups so the writer commits them in batches."""
    for first in range(start, start + count, 50):
        await asyncio.gather(
            *(log.append(entry(n)) for n in range(first, min(first + 50, start + count)))
        )


async def truncate(db: Database, keep: int) -> None:
    """Delete every record after ``keep``, and the tree, so the node rebuilds it from what is
    left: a shorter log whose chain is valid."""
    async with db.engine.begin() as connection:
        await connection.execute(text(f"DELETE FROM audit_record WHERE sequence > {keep}"))
        await connection.execute(text("DELETE FROM audit_subtree"))
        await connection.execute(text("DELETE FROM audit_tree"))


async def rewrite(db: Database, sequence: int, message: str) -> None:
    """Change record ``sequence``'s message and recompute the chain from it on, and drop the
    tree so the node rebuilds it: a rewritten past that `audit verify`'s chain check passes."""
    async with db.engine.begin() as connection:
        table = AuditRecordRow.__table__  # type: ignore[attr-defined]
        rows = list(
            await connection.execute(
                select(table).where(table.c.sequence >= sequence - 1).order_by(table.c.sequence)
            )
        )
        prev = rows[0].hash if rows[0].sequence == sequence - 1 else "0" * 64
        for row in rows:
            if row.sequence < sequence:
                continue
            fields = {name: getattr(row, name) for name in ("sequence", *_ENTRY_COLUMNS)}
            fields["detail"] = json.loads(row.detail)
            if row.sequence == sequence:
                fields["message"] = message
            new = record_hash(prev, fields)
            await connection.execute(
                text(
                    "UPDATE audit_record SET message = :m, prev_hash = :p, hash = :h "
                    "WHERE sequence = :s"
                ),
                {"m": fields["message"], "p": prev, "h": new, "s": row.sequence},
            )
            prev = new
        await connection.execute(text("DELETE FROM audit_subtree"))
        await connection.execute(text("DELETE FROM audit_tree"))
