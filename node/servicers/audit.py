"""AuditService (应用日志审计, 第三十九条): QueryAudit, protobuf in, domain query, protobuf out.

Who sees which records is decided in :mod:`node.audit._query`; what each RPC counts as (汇聚,
比对, ...) was decided when it was recorded, by :func:`node.audit._hook.operation_of`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
from govnode.v1 import audit_pb2

from gateway.auth import current_peer
from gateway.quote import quote
from node.audit import AuditLog, AuditQuery, AuditRecord, Operation, query_audit
from node.errors import InvalidArgument
from node.servicers.convert import optional_time

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


class AuditServicer:
    """QueryAudit over the node's :class:`AuditLog`; GetCheckpoint and StreamUsageLog are not
    here yet (they answer UNIMPLEMENTED, see node.servicers.PLANNED)."""

    def __init__(self, log: AuditLog, node_region: str) -> None:
        self._log = log
        self._region = node_region

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
