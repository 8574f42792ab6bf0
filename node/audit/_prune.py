"""Pruning archived segments from the live database (govnode audit prune, 第三十九条).

Only ever an operator's explicit command, never a background task; the mark only moves forward,
on segment boundaries (node.audit._pruned). Segments ``before`` the one named are removed only
when every one of them:

1. is past its retention: its newest record is older than now − ``[audit] retention_days``
   (at least 1095 days, 第三十九条);
2. was sealed and verifies in the archive directory given (node.audit._archive_check), and the
   archive is of *this* database: its segment roots are the tree's kept subtrees, its last
   hashes the records' own;
3. is covered by a checkpoint a witness cosigned.

And the chain's newest record always stays live (new records link to it). The Merkle tree's
stored subtrees are kept, so every checkpoint and every proof that needs only them still
verifies; what needed pruned records' hashes is answered with the segment to fetch.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, delete, func, select
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from node.audit._archive import archived_segments, segment_level, segment_sequences
from node.audit._archive_check import SegmentCheck, check_archive
from node.audit._log import AuditLog
from node.audit._pruned import PrunedMark, save_mark
from node.models import AuditRecordRow, AuditSubtreeRow
from node.storage import Database

_records = SQLModel.metadata.tables[str(AuditRecordRow.__tablename__)]
_subtrees = SQLModel.metadata.tables[str(AuditSubtreeRow.__tablename__)]
_LOCK = "govnode.audit"  # the chain's lock (node.audit._log): no batch is written meanwhile


class PruneRefused(Exception):
    """Pruning would break a rule (module docstring); the message names the segment and rule."""


@dataclass(frozen=True)
class Pruned:
    mark: PrunedMark
    segments: range  # the segments removed by this command
    records: int


def _archived(archive: Path) -> list[int]:
    return archived_segments(archive) if archive.is_dir() else []


async def _segment_facts(
    db: Database, first: int, last: int, level: int, k: int
) -> tuple[int, dt.datetime | None, str | None, str | None]:
    """(records live, newest at, last record's hash, kept subtree hash) of a segment."""

    async def txn(session: AsyncSession) -> tuple[int, dt.datetime | None, str | None, str | None]:
        c = await session.connection()
        in_segment = (_records.c.sequence >= first, _records.c.sequence <= last)
        count, newest = (
            await c.execute(select(func.count(), func.max(_records.c.at)).where(*in_segment))
        ).one()
        last_hash = (
            await c.execute(select(_records.c.hash).where(_records.c.sequence == last))
        ).scalar()
        subtree = (
            await c.execute(
                select(_subtrees.c.hash).where(_subtrees.c.level == level, _subtrees.c.idx == k)
            )
        ).scalar()
        return int(count), newest, last_hash, subtree

    return await db.read("audit.prune_facts", txn)


async def prune(
    *,
    db: Database,
    audit: AuditLog,
    before: int,
    segment_records: int,
    retention_days: int,
    witnessed_size: int,
    archive: Path,
    root_pem: bytes,
    trust_domain: str,
    now: dt.datetime,
    progress: Callable[[str], None] = lambda _: None,
) -> Pruned:
    """Remove segments up to ``before - 1`` from the live log, or raise PruneRefused."""
    level = segment_level(segment_records)
    mark = await audit.pruned()
    start = 0 if mark is None else mark.segments
    if mark is not None and mark.segment_records != segment_records:
        raise PruneRefused(
            f"[audit] segment_records is {segment_records}, but the log was pruned in segments "
            f"of {mark.segment_records}; set it back"
        )
    if before <= start:
        raise PruneRefused(
            f"--before-segment {before}: segments before {start} were pruned already; the live "
            "log only moves forward"
        )
    boundary = before * segment_records
    head, _ = await audit.head()
    if head <= boundary:
        raise PruneRefused(
            f"--before-segment {before}: the log's newest record is #{head}; pruning keeps it "
            f"live, so only segments ending before it (before {head // segment_records} or "
            "earlier) can go"
        )
    if witnessed_size < boundary:
        raise PruneRefused(
            f"segment {witnessed_size // segment_records}: no witness has cosigned a checkpoint "
            f"past it (the newest cosigned covers {witnessed_size} records; segment "
            f"{before - 1} ends at #{boundary}); wait for the next cosigned checkpoint"
        )
    oldest_allowed = now - dt.timedelta(days=retention_days)
    newest_pruned: dt.datetime | None = None
    for k in range(start, before):
        first, last = segment_sequences(k, segment_records)
        count, newest, _, _ = await _segment_facts(db, first, last, level, k)
        if count != segment_records or newest is None:
            raise PruneRefused(f"segment {k}: the live log holds {count} of its records, not all")
        if newest >= oldest_allowed:
            raise PruneRefused(
                f"segment {k}: its newest record is from {newest.isoformat(timespec='seconds')}, "
                f"within the retention of {retention_days} days (第三十九条: at least three "
                f"years); it may go after {(newest + dt.timedelta(days=retention_days)).date()}"
            )
        newest_pruned = newest if newest_pruned is None else max(newest_pruned, newest)
    wanted = list(range(start, before))
    present = set(await asyncio.to_thread(_archived, archive))
    missing = [k for k in wanted if k not in present]
    if missing:
        raise PruneRefused(
            f"segment {missing[0]}: not sealed in the archive {archive} "
            f"({len(missing)} of {len(wanted)} missing); run govnode audit archive first"
        )

    def done(result: SegmentCheck) -> None:
        progress(f"archive segment {result.segment}: {'OK' if result.ok else 'FAILED'}")

    checked = await asyncio.to_thread(
        check_archive, archive, wanted, root_pem, trust_domain, done=done
    )
    for result in checked:
        if not result.ok:
            raise PruneRefused(
                f"segment {result.segment}: the archive does not verify ({result.check}): "
                f"{result.message}"
            )
    expected_prev = "0" * 64 if mark is None else mark.anchor_hash
    for result in checked:
        first, last = segment_sequences(result.segment, segment_records)
        _, _, last_hash, subtree = await _segment_facts(db, first, last, level, result.segment)
        if (result.first_prev_hash, result.last_hash, result.root) != (
            expected_prev,
            last_hash,
            subtree,
        ):
            raise PruneRefused(
                f"segment {result.segment}: the archive is not of this database's records (its "
                "hashes or its root differ from the live log's)"
            )
        expected_prev = result.last_hash
    assert newest_pruned is not None
    new_mark = PrunedMark(
        first_live=boundary + 1,
        anchor_hash=expected_prev,
        segment_records=segment_records,
        newest_at=newest_pruned if mark is None else max(mark.newest_at, newest_pruned),
        pruned_at=now,
    )

    def move_mark(connection: Connection) -> None:
        db.lock_sync(connection, _LOCK)
        save_mark(connection, new_mark)

    # The mark first: from here on readers are told where the records went; then the records,
    # a segment per transaction (running the command again finishes an interrupted delete).
    await db.write_sync("audit.prune_mark", move_mark)
    removed = 0
    for k in range(0, before):
        first, last = segment_sequences(k, segment_records)

        def drop(connection: Connection, first: int = first, last: int = last) -> int:
            result = connection.execute(
                delete(_records).where(_records.c.sequence >= first, _records.c.sequence <= last)
            )
            return int(result.rowcount or 0)

        gone = await db.write_sync("audit.prune_segment", drop)
        if gone:
            progress(f"pruned segment {k}: records #{first} to #{last}")
        removed += gone
    return Pruned(new_mark, range(start, before), removed)
