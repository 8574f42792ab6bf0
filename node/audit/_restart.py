"""A node back from a backup (第三十九条): it never signs another history for sizes its witnesses
cosigned.

`govnode backup restore` marks the database it puts back (:func:`mark_restored`). Until the
node has asked its witnesses what they last cosigned of its log, it signs no checkpoint
(node.clients runs the check; appends go on). The answer decides:

- the witnesses cosigned nothing past the restored log, and what they cosigned is this log's
  history: the node goes on under its origin as if nothing happened, because nothing did;
- they cosigned more records than the backup holds, or a different history: those records are
  lost to this database (no mirror of a node's log exists yet to recover them from). The node
  goes on under a new origin, ``<host>/audit/<epoch>`` (:func:`restart`), whose first record,
  action ``audit.log_restarted``, names the old origin, its witnessed checkpoint with the
  witness's cosignature, and the gap. Its witnesses see the new origin start at a size they
  have not cosigned, record it and tell the operator; they cosign the old origin no further.

The tree and the chain go on unchanged across a restart (leaf i is still record i+1): an
inclusion proof for any record verifies against any checkpoint of either origin that covers it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import structlog
from sqlalchemy import update
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from node.audit._keys import log_origin, origin_parts
from node.audit._log import AuditEntry, AuditLog, Operation, request_digest
from node.models import AuditEpochRow, AuditRestoreRow
from node.storage import Database

log = structlog.get_logger("govnode.audit")

RESTART_ACTION = "audit.log_restarted"
_e = AuditEpochRow.__table__  # type: ignore[attr-defined]
_r = AuditRestoreRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Epoch:
    """An origin the log went on under after losing witnessed records."""

    epoch: int
    origin: str
    first_sequence: int
    opened_at: dt.datetime
    previous_origin: str
    previous_size: int
    previous_root: bytes
    previous_note: bytes
    restored_size: int

    @property
    def gap(self) -> str:
        """The records lost, in words."""
        return (
            f"records #{self.restored_size + 1} to #{self.previous_size} of "
            f"{self.previous_origin}, which its witnesses cosigned, are not in this database"
            if self.previous_size > self.restored_size
            else f"this database holds another history of {self.previous_origin} than the "
            f"{self.previous_size} records its witnesses cosigned"
        )


def _epoch(row: AuditEpochRow) -> Epoch:
    return Epoch(
        epoch=row.epoch,
        origin=row.origin,
        first_sequence=row.first_sequence,
        opened_at=row.opened_at,
        previous_origin=row.previous_origin,
        previous_size=row.previous_size,
        previous_root=bytes.fromhex(row.previous_root),
        previous_note=row.previous_note.encode(),
        restored_size=row.restored_size,
    )


async def epochs(db: Database) -> list[Epoch]:
    """Every restart of this node's log, oldest first (none for a log that never lost
    witnessed records)."""

    async def txn(session: AsyncSession) -> list[Epoch]:
        rows = (await session.exec(select(AuditEpochRow).order_by(_e.c.epoch))).all()
        return [_epoch(r) for r in rows]

    return await db.read("audit.epochs", txn)


async def current_epoch(db: Database) -> int:
    """The epoch this node signs checkpoints under now (0: its first origin)."""

    async def txn(session: AsyncSession) -> int:
        row = (
            await session.exec(select(AuditEpochRow).order_by(_e.c.epoch.desc()).limit(1))
        ).first()
        return 0 if row is None else row.epoch

    return await db.read("audit.epoch_current", txn)


async def mark_restored(db: Database, tree_size: int, *, at: dt.datetime | None = None) -> None:
    """Say that this database was put back from a backup whose log held ``tree_size``
    records: the node asks its witnesses before it signs a checkpoint again."""
    when = at or dt.datetime.now(dt.UTC)

    async def txn(session: AsyncSession) -> None:
        session.add(AuditRestoreRow(restored_at=when, tree_size=tree_size))

    await db.write("audit.restore_mark", txn)


@dataclass(frozen=True)
class PendingRestore:
    id: int
    restored_at: dt.datetime
    tree_size: int


async def pending_restore(db: Database) -> PendingRestore | None:
    """The oldest restore whose witnesses were not asked yet, if any."""

    async def txn(session: AsyncSession) -> PendingRestore | None:
        row = (
            await session.exec(
                select(AuditRestoreRow).where(_r.c.checked_at.is_(None)).order_by(_r.c.id).limit(1)
            )
        ).first()
        if row is None:
            return None
        return PendingRestore(row.id or 0, row.restored_at, row.tree_size)

    return await db.read("audit.restore_pending", txn)


async def settle_restores(db: Database, outcome: str) -> None:
    """Record what asking the witnesses found, for every restore not checked yet."""
    now = dt.datetime.now(dt.UTC)

    async def txn(session: AsyncSession) -> None:
        await (await session.connection()).execute(
            update(AuditRestoreRow)
            .where(_r.c.checked_at.is_(None))
            .values(checked_at=now, outcome=outcome[:2000])
        )

    await db.write("audit.restore_settle", txn)


@dataclass(frozen=True)
class Cosigned:
    """A checkpoint of this node's log (any of its origins) that a witness said it cosigned,
    its signatures checked."""

    origin: str
    size: int
    root: bytes
    note: bytes  # the checkpoint with the log's signature and the witness's cosignature
    by: str


async def lost_history(audit: AuditLog, witnessed: Cosigned, current: str) -> bool:
    """Whether ``witnessed`` shows records this database does not hold: a checkpoint of a
    later origin than ``current``, of more records than the tree has, or of another root at
    its size."""
    epoch = origin_parts(witnessed.origin)[1]
    now_epoch = origin_parts(current)[1]
    if epoch != now_epoch:
        return epoch > now_epoch  # an older origin is one this log already left behind
    head = await audit.tree_head()
    if witnessed.size > head.size:
        return True
    if witnessed.size == 0:
        return False
    at = await audit.tree_head(witnessed.size)
    return at.root != witnessed.root


async def restart(
    db: Database, audit: AuditLog, host: str, witnessed: Cosigned, restored_size: int
) -> Epoch:
    """Go on under a new origin after ``witnessed`` showed records lost: append the record
    that names the gap, then the new epoch (whose checkpoints start at the next signing)."""
    seen_epoch = origin_parts(witnessed.origin)[1]
    epoch = max(seen_epoch, await current_epoch(db)) + 1
    origin = log_origin(host, epoch)
    lost = (
        f"records #{restored_size + 1} to #{witnessed.size}"
        if witnessed.size > restored_size
        else f"the history of its {witnessed.size} records"
    )
    message = (
        f"the audit log goes on as {origin}: {witnessed.by} cosigned {witnessed.size} records "
        f"of {witnessed.origin}, and this database, restored with {restored_size}, lacks "
        f"{lost} (第三十九条)"
    )
    detail: dict[str, str | int] = {
        "origin": origin,
        "previous_origin": witnessed.origin,
        "previous_size": witnessed.size,
        "previous_root": witnessed.root.hex(),
        "restored_size": restored_size,
        "witnessed_by": witnessed.by,
    }
    sequence = await audit.append(
        AuditEntry(
            caller=host,
            method=RESTART_ACTION,
            operation=Operation.MAINTAIN,
            outcome="OK",
            request_digest=request_digest(witnessed.note),
            message=message,
            detail=detail,
        )
    )
    row = AuditEpochRow(
        epoch=epoch,
        origin=origin,
        first_sequence=sequence,
        opened_at=dt.datetime.now(dt.UTC),
        previous_origin=witnessed.origin,
        previous_size=witnessed.size,
        previous_root=witnessed.root.hex(),
        previous_note=witnessed.note.decode(),
        restored_size=restored_size,
    )

    async def txn(session: AsyncSession) -> None:
        session.add(row)

    await db.write("audit.epoch_open", txn)
    log.error("audit.log_restarted", origin=origin, sequence=sequence, message=message)
    return _epoch(row)
