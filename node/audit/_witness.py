"""This node as a witness of other nodes' audit logs (第三十九条; C2SP tlog-witness).

The province cosigns each city's checkpoints and the cities cosign the province's. A witness
keeps one state per log, the (size, root) it last cosigned, and cosigns a new checkpoint only
when the log's signature verifies and a consistency proof from that size verifies
(node.tlog.check_add_checkpoint). The state is replaced by a compare-and-swap on its size, in
one transaction, so two racing requests cannot both move it.

A checkpoint that contradicts what the witness cosigned, a smaller tree (rollback), another
root at the same size or a proof that fails (a fork), is refused, kept in witness_evidence
with the request as sent, logged, and notified to this node's data management authority.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from node.audit._keys import origin_parts
from node.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from node.models import WitnessEvidenceRow, WitnessStateRow
from node.storage import Database
from node.tlog import (
    AddCheckpoint,
    Checkpoint,
    CosignatureSigner,
    Verifier,
    WitnessRefusal,
    WitnessState,
    add_signature_lines,
    check_add_checkpoint,
    cosign,
    format_add_checkpoint,
    parse_add_checkpoint,
    parse_checkpoint,
    parse_note,
)

log = structlog.get_logger("govnode.audit")

_s = WitnessStateRow.__table__  # type: ignore[attr-defined]
_e = WitnessEvidenceRow.__table__  # type: ignore[attr-defined]

#: The largest add-checkpoint body accepted: 63 proof lines and a note with a few dozen
#: cosignatures fit in a fraction of it.
MAX_BODY_BYTES = 64 * 1024


class SizeConflict(Exception):
    """The log's idea of what this witness last cosigned is out of date (tlog-witness 409):
    it should send a consistency proof from ``size``."""

    def __init__(self, size: int, message: str) -> None:
        super().__init__(message)
        self.size = size


@dataclass(frozen=True)
class Evidence:
    """A refused checkpoint that contradicts one this witness cosigned."""

    id: int
    origin: str
    at: dt.datetime
    kind: str
    message: str


#: Called with (origin, message) when a log misbehaves: the node's authority is notified.
Alarm = Callable[[str, str], Awaitable[None]]


class Witness:
    """Cosigns other nodes' checkpoints with this node's witness key."""

    def __init__(self, db: Database, signer: CosignatureSigner, alarm: Alarm | None = None) -> None:
        self._db = db
        self._signer = signer
        self._alarm = alarm

    @property
    def name(self) -> str:
        return self._signer.name

    async def add_checkpoint(self, body: bytes, origin: str, verifier: Verifier) -> bytes:
        """Check and cosign one add-checkpoint request from the log of ``origin`` (the caller's
        own log: the servicer has matched the caller to it) whose key is ``verifier``.

        Returns the cosignature line(s). Raises InvalidArgument (malformed), PermissionDenied
        (not this log, or its signature fails), :class:`SizeConflict` (stale old size), or
        FailedPrecondition (a rollback or a fork: kept as evidence)."""
        if len(body) > MAX_BODY_BYTES:
            raise InvalidArgument(
                f"body: {len(body)} bytes; an add-checkpoint request is at most {MAX_BODY_BYTES}"
            )
        try:
            request = parse_add_checkpoint(body, max_bytes=MAX_BODY_BYTES)
        except WitnessRefusal as exc:
            raise InvalidArgument(f"body: {exc}") from None
        first, epoch = origin_parts(origin)
        family = await self._family(first)
        newest = max(family, key=lambda o: origin_parts(o)[1], default=origin)
        if origin_parts(newest)[1] > epoch:
            raise FailedPrecondition(
                f"{origin}: this log went on as {newest}, and this witness cosigns only that "
                "origin now (第三十九条)"
            )
        state = family.get(origin)
        try:
            checkpoint = check_add_checkpoint(
                request, log_verifiers={origin: [verifier]}, state=state
            )
        except WitnessRefusal as refusal:
            raise await self._refused(origin, request, state, refusal) from None
        if state is not None and checkpoint.size == state.size:
            # The same checkpoint again (tlog-witness allows it): cosign, nothing to store.
            return cosign(request.checkpoint, self._signer)
        await self._swap(origin, state, checkpoint, request.checkpoint)
        if state is None and epoch > 0:
            before = family.get(newest) if newest != origin else None
            await self._keep(
                origin,
                "restarted",
                f"{first} went on as {origin} from {checkpoint.size} records"
                + (
                    f"; this witness had cosigned {before.size} records of {newest}"
                    if before is not None
                    else ""
                )
                + ": records of its old log were lost (a restore from a backup)",
                request,
            )
        return cosign(request.checkpoint, self._signer)

    async def _family(self, first: str) -> dict[str, WitnessState]:
        """What this witness holds of every origin of the log whose first origin is
        ``first``."""

        async def txn(session: AsyncSession) -> list[WitnessStateRow]:
            statement = select(WitnessStateRow).where(
                (_s.c.origin == first) | _s.c.origin.startswith(first + "/", autoescape=True)
            )
            return list((await session.exec(statement)).all())

        rows = await self._db.read("witness.family", txn)
        return {
            r.origin: WitnessState(r.size, bytes.fromhex(r.root))
            for r in rows
            if origin_parts(r.origin)[0] == first
        }

    async def state(self, origin: str) -> WitnessState | None:
        async def txn(session: AsyncSession) -> WitnessState | None:
            row = await session.get(WitnessStateRow, origin)
            return None if row is None else WitnessState(row.size, bytes.fromhex(row.root))

        return await self._db.read("witness.state", txn)

    async def latest(self, origin: str) -> tuple[bytes, dt.datetime] | None:
        """The newest checkpoint of ``origin`` this witness cosigned, with a fresh cosignature
        (tlog-cosignature: as of now, the largest tree of that log it has seen), and when it
        first cosigned it; None if it witnesses no such log."""

        async def txn(session: AsyncSession) -> tuple[str, dt.datetime] | None:
            row = await session.get(WitnessStateRow, origin)
            return None if row is None else (row.note, row.updated_at)

        found = await self._db.read("witness.latest", txn)
        if found is None:
            return None
        note = found[0].encode()
        return add_signature_lines(note, cosign(note, self._signer)), found[1]

    async def states(self) -> list[tuple[str, int, dt.datetime]]:
        """(origin, size, when) of every log this node witnesses."""

        async def txn(session: AsyncSession) -> list[tuple[str, int, dt.datetime]]:
            rows = (await session.exec(select(WitnessStateRow).order_by(_s.c.origin))).all()
            return [(r.origin, r.size, r.updated_at) for r in rows]

        return await self._db.read("witness.states", txn)

    async def evidence(self, limit: int = 100) -> list[Evidence]:
        return await witness_evidence(self._db, limit)

    async def _swap(
        self, origin: str, old: WitnessState | None, new: Checkpoint, note: bytes
    ) -> None:
        now = dt.datetime.now(dt.UTC)
        values = {
            "size": new.size,
            "root": new.root.hex(),
            "note": note.decode(),
            "updated_at": now,
        }

        async def txn(session: AsyncSession) -> int:
            if old is None:
                await (await session.connection()).execute(
                    insert(WitnessStateRow).values(origin=origin, **values)
                )
                return 1
            result = await (await session.connection()).execute(
                update(WitnessStateRow)
                .where(_s.c.origin == origin, _s.c.size == old.size, _s.c.root == old.root.hex())
                .values(**values)
            )
            return int(result.rowcount)

        try:
            changed = await self._db.write("witness.swap", txn)
        except IntegrityError:
            changed = 0
        if changed != 1:
            # Another request moved the state between the check and the swap (tlog-witness
            # spells out why this must not be lost): the log retries from the new size.
            now_state = await self.state(origin)
            size = now_state.size if now_state is not None else 0
            raise SizeConflict(size, f"this witness's state of {origin} moved to size {size}")

    async def _refused(
        self,
        origin: str,
        request: AddCheckpoint,
        state: WitnessState | None,
        refusal: WitnessRefusal,
    ) -> Exception:
        """The error to answer ``refusal`` with, after keeping the evidence of a misbehaving
        log."""
        kind = refusal.kind
        if kind == "unknown_origin":
            return NotFound(str(refusal))
        if kind == "bad_signature":
            return PermissionDenied(str(refusal))
        if kind == "conflict":
            # A log that is behind on what this witness has (another of its processes had a
            # newer checkpoint cosigned, say) rereads its newest checkpoint and tries again.
            return SizeConflict(refusal.size if refusal.size is not None else 0, str(refusal))
        if kind == "bad_request":
            claimed = _claimed_size(request)
            if (
                state is not None
                and claimed is not None
                and request.old_size == state.size
                and claimed < state.size
            ):
                # The log knows this witness cosigned state.size and signs a smaller tree:
                # records it had were taken away.
                return await self._misbehaved(
                    origin,
                    "rollback",
                    f"{origin} signed a checkpoint of {claimed} records after this witness "
                    f"cosigned one of {state.size}: records of its log were removed",
                    request,
                )
            return InvalidArgument(str(refusal))
        # inconsistent_root, bad_proof: a fork.
        cosigned = state.size if state is not None else 0
        return await self._misbehaved(
            origin,
            "fork",
            f"{origin} signed a checkpoint inconsistent with the one of {cosigned} records this "
            f"witness cosigned ({refusal})",
            request,
        )

    async def _misbehaved(
        self, origin: str, kind: str, message: str, request: AddCheckpoint
    ) -> FailedPrecondition:
        """Keep the evidence and raise the alarm; the refusal to answer with."""
        await self._keep(origin, kind, message, request)
        return FailedPrecondition(
            f"refused to cosign: {message}; the request is kept as evidence (第三十九条)"
        )

    async def _keep(self, origin: str, kind: str, message: str, request: AddCheckpoint) -> None:
        """Keep the request as evidence, log it and raise the alarm."""
        now = dt.datetime.now(dt.UTC)

        async def txn(session: AsyncSession) -> None:
            row = await session.get(WitnessStateRow, origin)
            await (await session.connection()).execute(
                insert(WitnessEvidenceRow).values(
                    origin=origin,
                    at=now,
                    kind=kind,
                    message=message,
                    request=format_add_checkpoint(request).decode("utf-8", "replace"),
                    cosigned=row.note if row is not None else "",
                )
            )

        await self._db.write("witness.evidence_add", txn)
        log.error("witness.log_misbehaved", origin=origin, kind=kind, message=message)
        if self._alarm is not None:
            await self._alarm(origin, message)


async def witness_evidence(db: Database, limit: int = 100) -> list[Evidence]:
    """The newest ``limit`` checkpoints this node refused as a witness, newest first."""

    async def txn(session: AsyncSession) -> list[Evidence]:
        rows = (
            await session.exec(select(WitnessEvidenceRow).order_by(_e.c.id.desc()).limit(limit))
        ).all()
        return [Evidence(r.id or 0, r.origin, r.at, r.kind, r.message) for r in rows]

    return await db.read("witness.evidence", txn)


def _claimed_size(request: AddCheckpoint) -> int | None:
    try:
        return parse_checkpoint(parse_note(request.checkpoint).text).size
    except ValueError:
        return None
