"""The Merkle tree over the audit log, kept in the database (第三十九条; RFC 6962, node.tlog).

Leaf ``i`` is ``leaf_hash`` of the raw 32 bytes of record ``i + 1``'s chain hash, so the tree
adds evidence without changing a stored record or the chain. The tree grows in the transaction
that writes each batch of records, under the lock that orders the chain (so the processes of one
node on PostgreSQL agree on it): the frontier (one row, ``audit_tree``) moves on, and every
complete subtree of :data:`STORED_LEVEL` or more is kept (``audit_subtree``). A proof then reads
O(log n) rows: a subtree of 256 records or more is one row, a smaller one the hashes of at most
128 records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import structlog
from sqlalchemy import Connection, insert, select, text
from sqlmodel import SQLModel, col
from sqlmodel.ext.asyncio.session import AsyncSession

from node.models import AuditRecordRow, AuditSubtreeRow, AuditTreeRow
from node.tlog import (
    HASH_SIZE,
    Frontier,
    Pieces,
    ProofError,
    Wanted,
    complete_pieces,
    consistency_proof,
    fold,
    inclusion_proof,
    leaf_hash,
    root_of,
)

log = structlog.get_logger("govnode.audit")

#: Complete subtrees this high and up are stored (2**8 = 256 records each).
STORED_LEVEL = 8
#: Records taken into the tree per transaction when a log written before the tree catches up.
CATCH_UP_STEP = 20_000

_TREE_ID = 1
_subtree = SQLModel.metadata.tables[str(AuditSubtreeRow.__tablename__)]
_LOAD_SQL = text("SELECT size, frontier FROM audit_tree WHERE id = :id")
_HASHES_SQL = text(
    "SELECT hash FROM audit_record WHERE sequence > :after AND sequence <= :upto ORDER BY sequence"
)


def record_leaf(chain_hash: str) -> bytes:
    """The tree's leaf for a record: its chain hash (64 hex digits) as 32 bytes, leaf-hashed."""
    return leaf_hash(bytes.fromhex(chain_hash))


@dataclass(frozen=True)
class TreeHead:
    """The tree over the first ``size`` records, and its root."""

    size: int
    root: bytes


def encode(frontier: Frontier) -> str:
    return "".join(h.hex() for h in frontier.subtrees)


def _decode(size: int, frontier: str) -> Frontier:
    width = 2 * HASH_SIZE
    return Frontier(
        size, [bytes.fromhex(frontier[i : i + width]) for i in range(0, len(frontier), width)]
    )


def grow(connection: Connection, frontier: Frontier, chain_hashes: Iterable[str]) -> None:
    """Append records' leaves to ``frontier`` and store the subtrees they complete (inside the
    transaction that writes the records, under the chain's lock)."""
    store_subtrees(connection, extend(frontier, chain_hashes))
    connection.execute(
        text(save_sql((":size", ":frontier"))),
        {"size": frontier.size, "frontier": encode(frontier)},
    )


def extend(frontier: Frontier, chain_hashes: Iterable[str]) -> list[dict[str, object]]:
    """Append records' leaves to ``frontier``; the kept subtrees they complete, as rows of
    ``audit_subtree`` for :func:`store_subtrees` (then the frontier is saved, see
    :data:`SAVE_COLUMNS`)."""
    stored: list[dict[str, object]] = []
    for chain_hash in chain_hashes:
        completed = frontier.append(record_leaf(chain_hash))
        for level in range(STORED_LEVEL, len(completed) + 1):
            stored.append(
                {
                    "level": level,
                    "idx": (frontier.size >> level) - 1,
                    "hash": completed[level - 1].hex(),
                }
            )
    return stored


def store_subtrees(connection: Connection, stored: list[dict[str, object]]) -> None:
    if stored:
        connection.execute(insert(_subtree), stored)


def save_sql(marks: tuple[str, str]) -> str:
    """The statement saving the frontier (its size, then its :func:`encode` text, bound to
    ``marks``: the driver's parameter markers), for a driver's cursor."""
    return (
        f"INSERT INTO audit_tree (id, size, frontier) VALUES ({_TREE_ID}, {marks[0]}, "  # noqa: S608
        f"{marks[1]}) ON CONFLICT (id) DO UPDATE SET size = excluded.size, "
        "frontier = excluded.frontier"
    )


def stored_size(connection: Connection) -> int:
    row = connection.execute(_LOAD_SQL, {"id": _TREE_ID}).first()
    return int(row[0]) if row is not None else 0


def frontier_at(connection: Connection, size: int, cached: Frontier | None) -> Frontier:
    """The frontier over the first ``size`` records (the chain's head), in the transaction that
    holds the chain's lock: ``cached`` if it is that one, else the stored one, caught up with
    any records the tree does not cover yet."""
    if cached is not None and cached.size == size:
        return cached.copy()
    row = connection.execute(_LOAD_SQL, {"id": _TREE_ID}).first()
    frontier = _decode(int(row[0]), str(row[1])) if row is not None else Frontier()
    if frontier.size > size:
        # Records the tree covered are gone from the log. The tree is rebuilt from what is
        # there; the checkpoints signed before (and their witnesses) are what catch this.
        log.error("audit.tree_ahead_of_log", tree_size=frontier.size, log_size=size)
        connection.execute(_subtree.delete())
        frontier = Frontier()
    if frontier.size < size:
        hashes = connection.execute(_HASHES_SQL, {"after": frontier.size, "upto": size})
        grow(connection, frontier, (str(h[0]) for h in hashes))
    return frontier


async def _read_pieces(
    session: AsyncSession, pieces: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    found: dict[tuple[int, int], bytes] = {}
    connection = await session.connection()
    for start, level in sorted(pieces):
        if level >= STORED_LEVEL:
            row = (
                await connection.execute(
                    select(col(AuditSubtreeRow.hash)).where(
                        col(AuditSubtreeRow.level) == level,
                        col(AuditSubtreeRow.idx) == start >> level,
                    )
                )
            ).first()
            if row is None:
                raise ProofError(f"the audit tree has no subtree at level {level}, {start}")
            found[(start, level)] = bytes.fromhex(str(row[0]))
        else:
            rows = (
                await connection.execute(
                    select(col(AuditRecordRow.hash))
                    .where(
                        col(AuditRecordRow.sequence) > start,
                        col(AuditRecordRow.sequence) <= start + (1 << level),
                    )
                    .order_by(col(AuditRecordRow.sequence))
                )
            ).all()
            if len(rows) != 1 << level:
                raise ProofError(f"the audit log lacks records {start + 1}..{start + (1 << level)}")
            found[(start, level)] = root_of([record_leaf(str(r[0])) for r in rows])
    return found


async def tree_head(session: AsyncSession, size: int | None = None) -> TreeHead:
    """The tree over the first ``size`` records (all the tree covers if None)."""
    stored = await session.get(AuditTreeRow, _TREE_ID)
    covered = stored.size if stored is not None else 0
    if size is None or size == covered:
        if stored is None or stored.size == 0:
            return TreeHead(0, root_of([]))
        return TreeHead(stored.size, _decode(stored.size, stored.frontier).root())
    if not 0 <= size <= covered:
        raise ProofError(f"the audit tree covers {covered} records, not {size}")
    if size == 0:
        return TreeHead(0, root_of([]))
    pieces = complete_pieces(0, size)
    found = await _read_pieces(session, pieces)
    return TreeHead(size, fold([found[p] for p in pieces]))


async def kept_frontier(session: AsyncSession, size: int) -> Frontier:
    """The frontier over the first ``size`` records from the stored subtrees alone (after a
    prune, ``size`` is a segment boundary and every piece is a kept subtree)."""
    pieces = complete_pieces(0, size)
    found = await _read_pieces(session, pieces)
    return Frontier(size, [found[p] for p in pieces])


async def prove_inclusion(
    session: AsyncSession, sequence: int, size: int
) -> tuple[bytes, list[bytes]]:
    """Record ``sequence``'s leaf and its inclusion proof in the tree of ``size`` records."""
    wanted = Wanted()
    inclusion_proof(sequence - 1, size, wanted)
    found = await _read_pieces(session, {*wanted.pieces, (sequence - 1, 0)})
    return found[(sequence - 1, 0)], inclusion_proof(sequence - 1, size, Pieces(found))


async def prove_consistency(session: AsyncSession, size1: int, size2: int) -> list[bytes]:
    wanted = Wanted()
    consistency_proof(size1, size2, wanted)
    found = await _read_pieces(session, wanted.pieces)
    return consistency_proof(size1, size2, Pieces(found))
