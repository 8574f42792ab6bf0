"""The audit hook the guard calls for every RPC, accepted or refused.

The gateway knows what crossed the boundary (method, caller, request bytes, outcome); what an
RPC means for the Measures (汇聚, 查询, ...) and where records are kept is the node's business,
so the node supplies an :class:`AuditSink`. The guard awaits the sink before the response or
status leaves, so an audit record is durable before the caller learns the outcome.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway.quote import MAX_MESSAGE_BYTES, clip_message


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


#: The most an audit record keeps of an identity (caller, origin_node) and of each detail value,
#: in characters. Both come from certificates, signed assertions or the node's own code today;
#: the bound keeps it so. The message is bounded by :func:`gateway.quote.clip_message`.
MAX_IDENTITY_CHARS = 300
MAX_DETAIL_CHARS = 256


def cut(value: str, limit: int) -> str:
    """``value`` if it has at most ``limit`` characters, else its first ``limit - 1`` and "…"."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def bounded(record: CallRecord) -> CallRecord:
    """``record`` with every caller-influenced field within its bound, as the guard hands it to
    the sink: what the node hashes and stores is exactly this (node.audit._log applies the same
    bounds, so they leave it unchanged)."""
    if _within_bounds(record):
        return record  # the usual case, without copying (this runs for every call)
    return dataclasses.replace(
        record,
        caller=cut(record.caller, MAX_IDENTITY_CHARS),
        origin_node=cut(record.origin_node, MAX_IDENTITY_CHARS),
        message=clip_message(record.message),
        detail={
            key: cut(value, MAX_DETAIL_CHARS) if isinstance(value, str) else value
            for key, value in record.detail.items()
        },
    )


def _within_bounds(record: CallRecord) -> bool:
    """Whether :func:`bounded` would leave ``record`` as it is (checked cheaply: a non-ASCII
    message takes the general path)."""
    message = record.message
    return (
        len(record.caller) <= MAX_IDENTITY_CHARS
        and len(record.origin_node) <= MAX_IDENTITY_CHARS
        and (not message or (message.isascii() and len(message) <= MAX_MESSAGE_BYTES))
        and all(
            not isinstance(value, str) or len(value) <= MAX_DETAIL_CHARS
            for value in record.detail.values()
        )
    )


class AuditSink(Protocol):
    async def record(self, call: CallRecord) -> None:
        """Persist ``call``; return only once it is durable. Raising fails the RPC."""
        ...


#: Methods whose calls are not audited: load-balancer health probes are not data access.
UNAUDITED_PREFIXES = ("/grpc.health.v1.Health/",)
