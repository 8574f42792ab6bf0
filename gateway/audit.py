"""The audit hook the guard calls for every RPC, accepted or refused.

The gateway knows what crossed the boundary (method, caller, request bytes, outcome); what an
RPC means for the Measures (汇聚, 查询, ...) and where records are kept is the node's business,
so the node supplies an :class:`AuditSink`. The guard awaits the sink before the response or
status leaves, so an audit record is durable before the caller learns the outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class CallRecord:
    method: str  # full gRPC method, e.g. /govnode.v1.SharingService/Verify
    caller: str  # SPIFFE identity, or "unauthenticated" when the guard refused the caller
    origin_node: str  # the node that forwarded the call ("" when the caller came directly)
    resource_code: str  # the resource the request names ("" when none)
    outcome: str  # gRPC status code name: OK, PERMISSION_DENIED, ...
    message: str  # the status message for refusals ("" for OK)
    request_digest: str  # hex SHA-256 of the request bytes (all messages, for streams)
    request_id: str
    detail: Mapping[str, str | int] = field(default_factory=dict)


class AuditSink(Protocol):
    async def record(self, call: CallRecord) -> None:
        """Persist ``call``; return only once it is durable. Raising fails the RPC."""
        ...


#: Methods whose calls are not audited: load-balancer health probes are not data access.
UNAUDITED_PREFIXES = ("/grpc.health.v1.Health/",)
