"""Where the live audit log starts after an operator pruned archived segments (第三十九条).

`govnode audit prune` (node.audit._prune) removes whole segments, past their retention and
archived, from the live database and leaves one row in ``audit_pruned``: the first live
sequence and the chain hash of the last pruned record (the anchor the live chain links to).
Readers of the log consult it so that asking for a pruned record is answered with the archive
segment that holds it, never with "no such record": the records were moved, not lost
(tlog-tiles: deny, do not delete). The Merkle tree's stored subtrees are all kept.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel

from node.errors import FailedPrecondition
from node.models import AuditPrunedRow

_table = SQLModel.metadata.tables[str(AuditPrunedRow.__tablename__)]
_ID = 1


@dataclass(frozen=True)
class PrunedMark:
    """Records 1 to ``first_live - 1`` are in archive segments of ``segment_records`` each;
    ``anchor_hash`` is the chain hash of record ``first_live - 1``."""

    first_live: int
    anchor_hash: str
    segment_records: int
    newest_at: dt.datetime
    pruned_at: dt.datetime

    @property
    def segments(self) -> int:
        """How many segments were pruned (segments 0 to this - 1)."""
        return (self.first_live - 1) // self.segment_records

    def segment_of(self, sequence: int) -> int:
        return (sequence - 1) // self.segment_records

    def refuse(self, sequence: int, what: str = "record") -> RecordsPruned:
        k = self.segment_of(sequence)
        first, last = k * self.segment_records + 1, (k + 1) * self.segment_records
        return RecordsPruned(
            f"{what} #{sequence} was pruned from this node's live audit log on "
            f"{self.pruned_at.date().isoformat()} after its retention (第三十九条): it is in "
            f"archive segment {k} (records #{first} to #{last}); fetch that segment from the "
            f"archive (govnode audit verify-archive checks it). The live log starts at "
            f"#{self.first_live}."
        )

    def refuse_range(self) -> RecordsPruned:
        """A query that would reach back into the pruned records."""
        last = self.first_live - 1
        return RecordsPruned(
            f"records #1 to #{last} (up to {self.newest_at.isoformat(timespec='seconds')}) were "
            f"pruned from this node's live audit log after their retention (第三十九条): they are "
            f"in archive segments 0 to {self.segments - 1} of {self.segment_records} records; "
            "read them from the archive, or ask with a start_time after "
            f"{self.newest_at.isoformat(timespec='seconds')} for the live records"
        )


class RecordsPruned(FailedPrecondition):
    """A read of records that were pruned into the archive; the message names the segment."""


def _mark(row: Row[Any] | None) -> PrunedMark | None:
    if row is None:
        return None
    return PrunedMark(
        int(row.first_live),
        str(row.anchor_hash),
        int(row.segment_records),
        row.newest_at,
        row.pruned_at,
    )


def read_mark_sync(connection: Connection) -> PrunedMark | None:
    return _mark(connection.execute(select(_table).where(_table.c.id == _ID)).first())


async def read_mark(connection: AsyncConnection) -> PrunedMark | None:
    return _mark((await connection.execute(select(_table).where(_table.c.id == _ID))).first())


def save_mark(connection: Connection, mark: PrunedMark) -> None:
    """Replace the mark (in the caller's transaction): it only ever moves forward."""
    connection.execute(delete(_table).where(_table.c.id == _ID))
    connection.execute(
        insert(_table).values(
            id=_ID,
            first_live=mark.first_live,
            anchor_hash=mark.anchor_hash,
            segment_records=mark.segment_records,
            newest_at=mark.newest_at,
            pruned_at=mark.pruned_at,
        )
    )
