"""AuditService (应用日志审计, 第三十九条): QueryAudit, checkpoints and proofs; protobuf in,
domain call, protobuf out.

Who sees which records is decided in :mod:`node.audit._query`; what each RPC counts as (汇聚,
比对, ...) was decided when it was recorded, by :func:`node.audit._hook.operation_of`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from cryptography import x509
from govnode.v1 import audit_pb2

from gateway.auth import current_peer
from gateway.quote import quote
from node.audit import (
    AuditLog,
    AuditQuery,
    AuditRecord,
    Checkpoints,
    Operation,
    StoredCheckpoint,
    WitnessRule,
    cosigners,
    query_audit,
    witness_vkeys,
)
from node.errors import FailedPrecondition, InvalidArgument, NotFound
from node.servicers.convert import optional_time
from node.storage import Database
from node.tlog import TYPE_ECDSA, vkey

_OUTCOMES = frozenset(code.name for code in grpc.StatusCode)


def _operation_number(operation: Operation) -> int:
    """``Operation.COMPARE`` -> ``AUDIT_OPERATION_COMPARE`` (the enums match by name)."""
    return int(audit_pb2.AuditOperation.Value(f"AUDIT_OPERATION_{operation.name}"))


def _operation_in(number: int) -> Operation | None:
    if number == audit_pb2.AUDIT_OPERATION_UNSPECIFIED:
        return None
    for operation in Operation:
        if _operation_number(operation) == number:
            return operation
    raise InvalidArgument(f"operation: {number} is not a valid AuditOperation")


def _summary(record: AuditRecord) -> str:
    """The status message, or for a call without one the facts it recorded (row counts...)."""
    facts = ", ".join(f"{key}={value}" for key, value in sorted(record.detail.items()))
    if record.message and facts:
        return f"{record.message} ({facts})"
    return record.message or facts


def record_to_proto(record: AuditRecord) -> audit_pb2.AuditRecord:
    msg = audit_pb2.AuditRecord(
        sequence=record.sequence,
        caller_identity=record.caller,
        origin_node=record.origin_node,
        operation=_operation_number(record.operation),  # type: ignore[arg-type]
        rpc_method=record.method,
        resource_code=record.resource_code,
        outcome=record.outcome,
        message=_summary(record),
        request_digest=record.request_digest,
        request_id=record.request_id,
        record_hash=record.hash,
        previous_hash=record.prev_hash,
    )
    msg.at.FromDatetime(record.at.astimezone(dt.UTC))
    return msg


async def checkpoint_response(
    stored: StoredCheckpoint, db: Database, own_chain_pem: str, own_identity: str
) -> audit_pb2.GetCheckpointResponse:
    """A checkpoint with everything a verifier needs besides the province root: the log's
    chain, and each cosigner's chain and witness key statement."""
    checkpoint = stored.checkpoint
    msg = audit_pb2.GetCheckpointResponse(
        checkpoint=audit_pb2.AuditCheckpoint(
            origin=checkpoint.origin,
            size=checkpoint.size,
            root=checkpoint.root,
            cosigned_by=list(stored.cosigned_by),
        ),
        signed_note=stored.note,
        signers=[
            audit_pb2.CheckpointSigner(identity=own_identity, certificate_chain_pem=own_chain_pem)
        ],
    )
    msg.checkpoint.made_at.FromDatetime(stored.made_at.astimezone(dt.UTC))
    known = await cosigners(db)
    for identity in stored.cosigned_by:
        keys = known.get(identity)
        if keys is not None:
            msg.signers.append(
                audit_pb2.CheckpointSigner(
                    identity=identity,
                    certificate_chain_pem=keys.chain_pem,
                    witness_key_statement=keys.statement,
                )
            )
    return msg


class AuditServicer:
    """QueryAudit over the node's :class:`AuditLog`; its checkpoints and proofs.
    StreamUsageLog is node.servicers.usage's."""

    def __init__(
        self,
        log: AuditLog,
        node_region: str,
        checkpoints: Checkpoints | None = None,
        db: Database | None = None,
        own_chain_pem: str = "",
        own_identity: str = "",
        rule: Callable[[], Awaitable[WitnessRule]] | None = None,
    ) -> None:
        self._log = log
        self._region = node_region
        self._checkpoints = checkpoints
        self._db = db
        self._chain_pem = own_chain_pem
        self._identity = own_identity
        self._rule = rule

    async def _checkpoint(self, size: int, *, witnessed: bool = False) -> StoredCheckpoint:
        if self._checkpoints is None:
            raise FailedPrecondition("this node does not sign checkpoints")
        if size < 0:
            raise InvalidArgument(f"size: must not be negative, got {size}")
        if size == 0 and witnessed:
            stored = (
                await self._checkpoints.newest_witnessed(await self._rule())
                if self._rule is not None
                else await self._checkpoints.newest_cosigned()
            )
            if stored is None:
                raise NotFound(
                    "no checkpoint of this node's audit log has the cosignatures its witness "
                    "rule asks for yet"
                )
            return stored
        if size == 0:
            stored = await self._checkpoints.newest()
            if stored is None:
                raise NotFound(
                    "this node has signed no checkpoint of its audit log yet; it signs one "
                    "every [audit] checkpoint_seconds once records were added"
                )
            return stored
        stored = await self._checkpoints.at_size(size)
        if stored is None:
            raise NotFound(
                f"size: this node signed no checkpoint of {size} records; ask for size 0 (the "
                "newest) and a consistency proof from it"
            )
        return stored

    async def _response(self, stored: StoredCheckpoint) -> audit_pb2.GetCheckpointResponse:
        assert self._db is not None
        reply = await checkpoint_response(stored, self._db, self._chain_pem, self._identity)
        if self._rule is not None:
            rule = await self._rule()
            reply.witness_rule = rule.describe()
            reply.missing = rule.missing(stored.cosigned_by)
            reply.policy = rule.policy_text(
                self._log_vkey(stored.checkpoint.origin), await witness_vkeys(self._db)
            )
        return reply

    def _log_vkey(self, origin: str) -> str:
        leaf = x509.load_pem_x509_certificates(self._chain_pem.encode())[0]
        return vkey(origin, leaf.public_key(), TYPE_ECDSA)  # type: ignore[arg-type]

    async def GetCheckpoint(
        self, request: audit_pb2.GetCheckpointRequest, context: Any
    ) -> audit_pb2.GetCheckpointResponse:
        return await self._response(
            await self._checkpoint(request.size, witnessed=request.witnessed)
        )

    async def GetInclusionProof(
        self, request: audit_pb2.GetInclusionProofRequest, context: Any
    ) -> audit_pb2.GetInclusionProofResponse:
        stored = await self._checkpoint(request.size)
        if not 0 < request.sequence <= stored.size:
            raise InvalidArgument(
                f"sequence: {request.sequence} is not covered by the checkpoint of "
                f"{stored.size} records; a newer checkpoint covers newer records"
            )
        record_hash = await self._log.record_hash(request.sequence)
        if record_hash is None:
            raise NotFound(f"sequence: record {request.sequence} is not in this node's log")
        _, proof = await self._log.inclusion_proof(request.sequence, stored.size)
        return audit_pb2.GetInclusionProofResponse(
            index=request.sequence - 1,
            record_hash=record_hash,
            proof=proof,
            checkpoint=await self._response(stored),
        )

    async def GetConsistencyProof(
        self, request: audit_pb2.GetConsistencyProofRequest, context: Any
    ) -> audit_pb2.GetConsistencyProofResponse:
        to_size = request.to_size or (await self._checkpoint(0)).size
        if not 0 < request.from_size <= to_size:
            raise InvalidArgument(
                f"from_size: must be between 1 and to_size ({to_size}), got {request.from_size}"
            )
        proof = await self._log.consistency_proof(request.from_size, to_size)
        return audit_pb2.GetConsistencyProofResponse(
            from_size=request.from_size, to_size=to_size, proof=proof
        )

    async def QueryAudit(
        self, request: audit_pb2.QueryAuditRequest, context: Any
    ) -> audit_pb2.QueryAuditResponse:
        if request.outcome and request.outcome not in _OUTCOMES:
            raise InvalidArgument(
                f"outcome: {quote(request.outcome)} is not a gRPC status code name; use one such "
                "as OK, PERMISSION_DENIED or INVALID_ARGUMENT"
            )
        query = AuditQuery(
            caller_identity=request.caller_identity,
            resource_code=request.resource_code,
            operation=_operation_in(request.operation),
            outcome=request.outcome,
            start_time=optional_time(request, "start_time"),
            end_time=optional_time(request, "end_time"),
            request_id=request.request_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        page = await query_audit(self._log, current_peer().identity, self._region, query)
        return audit_pb2.QueryAuditResponse(
            records=[record_to_proto(r) for r in page.records],
            next_page_token=page.next_page_token,
        )
