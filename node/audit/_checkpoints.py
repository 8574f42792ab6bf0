"""Signed checkpoints of this node's audit log (第三十九条; C2SP tlog-checkpoint).

A checkpoint is the log's origin, the tree size and the Merkle root (node.audit._tree), in a
signed note with the node's ECDSA key. The node signs one every ``[audit] checkpoint_seconds``
when records were added, and as soon as ``checkpoint_records`` were added (node.clients runs the
schedule). Witnesses add their cosignatures to it later (:meth:`Checkpoints.add_cosignatures`).

The rule the whole scheme rests on (tlog-checkpoint): *a log never signs a checkpoint
inconsistent with one it signed before*. Before signing, the newest stored checkpoint is
checked against the tree: the tree may not be smaller, and a consistency proof from that
checkpoint to the new size must verify. When either fails the records behind a signed
checkpoint were deleted or rewritten; the node then signs nothing more, and says so
(:class:`LogDiverged`), until an operator has looked. Witnesses catch the same thing
independently, even when the checkpoints table itself was rewritten.

Several processes of one node (PostgreSQL) may each try to sign the same size; the size is the
table's key, so one checkpoint per size is kept and the others are dropped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import structlog
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from node.audit._keys import epoch_origin
from node.audit._log import AuditLog
from node.audit._policy import WitnessRule
from node.audit._restart import current_epoch
from node.models import AuditCheckpointRow, AuditCosignerRow
from node.storage import Database
from node.tlog import (
    Checkpoint,
    EcdsaSigner,
    NoteSignature,
    Signer,
    add_signatures,
    parse_checkpoint,
    parse_note,
    sign_note,
    verify_consistency,
)
from node.tlog import ProofError as _ProofError

log = structlog.get_logger("govnode.audit")

_t = AuditCheckpointRow.__table__  # type: ignore[attr-defined]


class LogDiverged(Exception):
    """The log no longer extends a checkpoint this node signed: records it covered were
    deleted or rewritten. The node signs no checkpoint until an operator has looked."""


@dataclass(frozen=True)
class StoredCheckpoint:
    """One signed checkpoint, with the cosignatures gathered so far."""

    size: int
    root: bytes
    made_at: dt.datetime
    note: bytes
    cosigned_by: tuple[str, ...]

    @property
    def checkpoint(self) -> Checkpoint:
        return parse_checkpoint(parse_note(self.note).text)


def _stored(row: AuditCheckpointRow) -> StoredCheckpoint:
    return StoredCheckpoint(
        size=row.size,
        root=bytes.fromhex(row.root),
        made_at=row.made_at,
        note=row.note.encode(),
        cosigned_by=tuple(n for n in row.cosigned_by.split(",") if n),
    )


class Checkpoints:
    """This node's checkpoints: made from the tree, signed, stored, cosigned."""

    def __init__(self, db: Database, audit: AuditLog, origin: str, signer: Signer) -> None:
        """``origin`` and ``signer``: the log's first origin and the node key under its name.
        After a restart (node.audit._restart) checkpoints are signed under the newest
        epoch's origin, with the same key under that name."""
        self._db = db
        self._audit = audit
        self.first_origin = origin
        self.origin = origin
        self._signer = signer

    async def refresh_origin(self) -> None:
        """Sign under the newest epoch's origin (another process may have opened it)."""
        epoch = await current_epoch(self._db)
        origin = epoch_origin(self.first_origin, epoch)
        if origin != self.origin:
            if not isinstance(self._signer, EcdsaSigner):
                raise TypeError("a restarted log needs its node key as an EcdsaSigner")
            self.origin = origin
            self._signer = self._signer.named(origin)

    async def newest(self) -> StoredCheckpoint | None:
        async def txn(session: AsyncSession) -> StoredCheckpoint | None:
            row = (
                await session.exec(select(AuditCheckpointRow).order_by(_t.c.size.desc()).limit(1))
            ).first()
            return None if row is None else _stored(row)

        return await self._db.read("audit.checkpoint_newest", txn)

    async def at_size(self, size: int) -> StoredCheckpoint | None:
        async def txn(session: AsyncSession) -> StoredCheckpoint | None:
            row = await session.get(AuditCheckpointRow, size)
            return None if row is None else _stored(row)

        return await self._db.read("audit.checkpoint_at", txn)

    async def newest_cosigned(self) -> StoredCheckpoint | None:
        """The newest checkpoint at least one witness has cosigned."""
        return await newest_cosigned(self._db)

    async def newest_witnessed(
        self, rule: WitnessRule, *, scan: int = 200
    ) -> StoredCheckpoint | None:
        """The newest checkpoint whose cosignatures meet ``rule`` (among the newest ``scan``
        cosigned ones: cosignatures arrive in order, so an older one rarely meets it when
        none of these does)."""

        async def txn(session: AsyncSession) -> list[AuditCheckpointRow]:
            return list(
                (
                    await session.exec(
                        select(AuditCheckpointRow)
                        .where(_t.c.cosigned_by != "")
                        .order_by(_t.c.size.desc())
                        .limit(scan)
                    )
                ).all()
            )

        for row in await self._db.read("audit.checkpoint_witnessed", txn):
            stored = _stored(row)
            if rule.satisfied(stored.cosigned_by):
                return stored
        return None

    async def make(self, *, now: dt.datetime | None = None) -> StoredCheckpoint | None:
        """Sign a checkpoint of the tree as it is, if it grew since the newest one; returns
        it (or the one another process made of the same size), or None if nothing changed.

        Raises :class:`LogDiverged` when the tree does not extend the newest checkpoint."""
        await self.refresh_origin()
        newest = await self.newest()
        head = await self._audit.tree_head()
        if newest is not None:
            await self._check_extends(newest, head.size, head.root)
            if head.size == newest.size:
                return None
        if head.size == 0:
            return None
        text = Checkpoint(self.origin, head.size, head.root).body()
        note = sign_note(text, self._signer)
        made_at = now or dt.datetime.now(dt.UTC)

        async def txn(session: AsyncSession) -> None:
            session.add(
                AuditCheckpointRow(
                    size=head.size,
                    root=head.root.hex(),
                    made_at=made_at,
                    note=note.decode(),
                    cosigned_by="",
                )
            )

        # Another process of this node may have signed this size first: keep its checkpoint.
        with contextlib.suppress(IntegrityError):
            await self._db.write("audit.checkpoint_make", txn)
        made = await self.at_size(head.size)
        if made is not None and made.note == note:
            log.info("audit.checkpoint_signed", size=head.size, root=head.root.hex())
        return made

    async def _check_extends(self, newest: StoredCheckpoint, size: int, root: bytes) -> None:
        if size < newest.size:
            raise LogDiverged(
                f"the audit log holds {size} records, fewer than the {newest.size} of the "
                f"checkpoint this node signed at {newest.made_at.isoformat()}: records were "
                "deleted"
            )
        if size == newest.size:
            if root != newest.root:
                raise LogDiverged(
                    f"the audit tree of {size} records has root {root.hex()[:16]}…, not the "
                    f"{newest.root.hex()[:16]}… this node signed at "
                    f"{newest.made_at.isoformat()}: records were rewritten"
                )
            return
        proof = await self._audit.consistency_proof(newest.size, size)
        try:
            verify_consistency(newest.size, size, proof, newest.root, root)
        except _ProofError:
            raise LogDiverged(
                f"the audit tree of {size} records does not extend the checkpoint of "
                f"{newest.size} this node signed at {newest.made_at.isoformat()}: records up to "
                f"{newest.size} were rewritten"
            ) from None

    async def add_cosignatures(
        self, size: int, signatures: Iterable[tuple[str, NoteSignature]]
    ) -> StoredCheckpoint | None:
        """Add verified cosignatures (witness identity, signature line) to the checkpoint of
        ``size``; a witness's newer cosignature replaces its older one."""
        pairs = list(signatures)

        async def txn(session: AsyncSession) -> StoredCheckpoint | None:
            row = await session.get(AuditCheckpointRow, size, with_for_update=True)
            if row is None:
                return None
            note = add_signatures(row.note.encode(), *(_Fixed(sig) for _, sig in pairs))
            names = sorted({*(n for n in row.cosigned_by.split(",") if n), *(w for w, _ in pairs)})
            await (await session.connection()).execute(
                update(AuditCheckpointRow)
                .where(_t.c.size == size)
                .values(note=note.decode(), cosigned_by=",".join(names))
            )
            return StoredCheckpoint(
                row.size, bytes.fromhex(row.root), row.made_at, note, tuple(names)
            )

        return await self._db.write("audit.checkpoint_cosign", txn)


class _Fixed:
    """A signature already made (a witness's cosignature), presented as a Signer so that
    :func:`node.tlog.add_signatures` can place it in the note."""

    def __init__(self, signature: NoteSignature) -> None:
        self.name = signature.name
        self.key_id = signature.key_id
        self._signature = signature.signature

    def sign(self, message: bytes) -> bytes:
        return self._signature


@dataclass(frozen=True)
class CosignerKeys:
    """A witness of this log, as it last presented itself: what verifiers of its cosignature
    need (node.audit._keys.read_witness_statement)."""

    identity: str
    witness_name: str
    chain_pem: str
    statement: bytes
    updated_at: dt.datetime


async def remember_cosigner(db: Database, cosigner: CosignerKeys) -> None:
    async def txn(session: AsyncSession) -> None:
        row = await session.get(AuditCosignerRow, cosigner.identity)
        if row is None:
            session.add(
                AuditCosignerRow(
                    identity=cosigner.identity,
                    witness_name=cosigner.witness_name,
                    chain_pem=cosigner.chain_pem,
                    statement=cosigner.statement.decode(),
                    updated_at=cosigner.updated_at,
                )
            )
        elif row.chain_pem != cosigner.chain_pem or row.statement != cosigner.statement.decode():
            row.witness_name = cosigner.witness_name
            row.chain_pem = cosigner.chain_pem
            row.statement = cosigner.statement.decode()
            row.updated_at = cosigner.updated_at

    await db.write("audit.cosigner_remember", txn)


async def cosigners(db: Database) -> dict[str, CosignerKeys]:
    """Every witness of this log that has cosigned, by identity."""

    async def txn(session: AsyncSession) -> dict[str, CosignerKeys]:
        rows = (await session.exec(select(AuditCosignerRow))).all()
        return {
            r.identity: CosignerKeys(
                r.identity, r.witness_name, r.chain_pem, r.statement.encode(), r.updated_at
            )
            for r in rows
        }

    return await db.read("audit.cosigners", txn)


async def witness_vkeys(db: Database) -> dict[str, str]:
    """Identity -> the vkey each witness of this log stated (read from its statement as
    stored; verifiers check the statement themselves)."""
    found = {}
    for identity, keys in (await cosigners(db)).items():
        try:
            lines = parse_note(keys.statement).text.split("\n")
        except ValueError:
            continue
        if len(lines) >= 3:
            found[identity] = lines[2]
    return found


async def newest_cosigned(db: Database) -> StoredCheckpoint | None:
    """The newest checkpoint of this node's log that at least one witness has cosigned."""

    async def txn(session: AsyncSession) -> StoredCheckpoint | None:
        row = (
            await session.exec(
                select(AuditCheckpointRow)
                .where(_t.c.cosigned_by != "")
                .order_by(_t.c.size.desc())
                .limit(1)
            )
        ).first()
        return None if row is None else _stored(row)

    return await db.read("audit.checkpoint_cosigned", txn)
