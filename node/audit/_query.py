"""Reading the audit log over the API (AuditService.QueryAudit, 第三十九条): who sees what.

- Every caller reads the records of its own calls: those whose caller is its identity, the
  calls other nodes forwarded for it included (they are recorded under the original caller).
  That is what lets a conformance tester (第三十一条) check that its calls were logged.
- The data management authority (数据管理机构) of the node's own region reads every record,
  and may ask for any caller's.
- Asking for another caller's records is refused, never silently narrowed.

Records come in sequence order, a page at a time (100 by default, 1,000 at most: a larger
page_size is reduced to it, as common.proto's Pagination says); the page
token carries the last sequence served and a fingerprint of the filters, so it continues only
the query it came from. The log only grows, so a later page may hold records written after the
first page was read (the caller's own QueryAudit calls among them).

Pure domain over :class:`node.audit.AuditLog`: no grpc.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

from gateway.identity import Identity, Role
from gateway.quote import quote
from node import paging
from node.audit._log import MAX_QUERY_LIMIT, AuditLog, AuditRecord, Operation
from node.errors import InvalidArgument, PermissionDenied

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = MAX_QUERY_LIMIT
_TOKEN_PREFIX = "a1:"  # noqa: S105 (a page-token version tag, not a secret)


@dataclass(frozen=True)
class AuditQuery:
    """The filters of one QueryAudit; a filter left empty (or None) matches everything."""

    caller_identity: str = ""
    resource_code: str = ""
    operation: Operation | None = None
    outcome: str = ""  # a gRPC status code name, e.g. "PERMISSION_DENIED"
    start_time: dt.datetime | None = None  # inclusive
    end_time: dt.datetime | None = None  # exclusive
    request_id: str = ""
    page_size: int = 0  # 0: DEFAULT_PAGE_SIZE
    page_token: str = ""


@dataclass(frozen=True)
class AuditPage:
    records: list[AuditRecord]
    next_page_token: str = ""  # "" on the last page


def reads_everything(caller: Identity, node_region: str) -> bool:
    """Whether ``caller`` may read every record of this node's log: its region's authority."""
    return caller.role is Role.AUTHORITY and caller.region == node_region


async def query_audit(
    log: AuditLog, caller: Identity, node_region: str, query: AuditQuery
) -> AuditPage:
    """One page of the records ``caller`` may read that match ``query``."""
    size = paging.page_size(query.page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
    who = query.caller_identity
    if not reads_everything(caller, node_region):
        if who and who != caller.uri:
            raise PermissionDenied(
                f"caller_identity: {quote(who)} is not the caller ({caller.uri}); a caller reads "
                "the audit records of its own calls, and only the data management authority of "
                f"region {node_region} reads other callers' (第三十九条)"
            )
        who = caller.uri
    for name, moment in (("start_time", query.start_time), ("end_time", query.end_time)):
        if moment is not None and (moment.tzinfo is None or moment.utcoffset() is None):
            raise InvalidArgument(f"{name}: {moment.isoformat()} has no time zone; use UTC")
    fingerprint = _fingerprint(who, query)
    after = _decode_token(query.page_token, fingerprint)

    async def matching(after_sequence: int, limit: int) -> list[AuditRecord]:
        return await log.query(
            caller=who or None,
            resource_code=query.resource_code or None,
            operation=query.operation,
            outcome=query.outcome or None,
            request_id=query.request_id or None,
            since=query.start_time,
            until=query.end_time,
            after_sequence=after_sequence,
            limit=limit,
        )

    records = await matching(after, size)
    if len(records) < size:
        return AuditPage(records)
    last = records[-1].sequence
    # A full page: there is a next page only if a matching record follows (one row to read).
    if not await matching(last, 1):
        return AuditPage(records)
    return AuditPage(records, _encode_token(last, fingerprint))


def _fingerprint(who: str, query: AuditQuery) -> str:
    """The query a page token belongs to: every filter, the page size left out."""
    parts = [
        who,
        query.resource_code,
        query.operation.value if query.operation else "",
        query.outcome,
        query.start_time.isoformat() if query.start_time else "",
        query.end_time.isoformat() if query.end_time else "",
        query.request_id,
    ]
    text = json.dumps(parts, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode_token(after: int, fingerprint: str) -> str:
    return paging.encode_text(f"{_TOKEN_PREFIX}{after}:{fingerprint}")


def _decode_token(token: str, fingerprint: str) -> int:
    if not token:
        return 0
    raw = paging.decode_text(token) or ""
    after, _, print_ = raw.removeprefix(_TOKEN_PREFIX).partition(":")
    sequence = paging.parse_count(after)
    if not raw.startswith(_TOKEN_PREFIX) or sequence is None or print_ != fingerprint:
        raise InvalidArgument(
            "page_token: not a page token of this query (same filters); repeat the query "
            "without it to start over"
        )
    return sequence
