"""SharingService (第二十六条): 汇聚 Submit, 联机验证 Verify, 比对验证 Compare, 检索查询 Query.

Each data call: parse, look the resource up in the catalog (forwarding it to its owner when another
node holds it: the owner decides for the original caller), decide (one call to
node.sharing.AccessDecider, with the items the request touches), then let the records domain
read, mask and answer. Submit acknowledges each batch only after it is committed and its audit
record is durable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

from govnode.v1 import common_pb2, sharing_pb2

from gateway.audit import AuditSink, CallRecord
from gateway.auth import current_peer
from gateway.identity import Role
from gateway.interceptors import add_audit_detail, current_request_id
from node.catalog import Catalog, ResourceEntry, ShareMethod
from node.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from node.federation import Router
from node.records import (
    CHANGE_BATCH_PREFIX,
    DUPLICATE_BATCH_MESSAGE,
    MAX_COMPARE_RESULTS_PER_MESSAGE,
    UNDECLARED,
    BatchOutcome,
    Dispute,
    MatchResult,
    QueryFilter,
    Records,
    SubmitBatch,
    TemporaryCollection,
    VerifyOutcome,
)
from node.servicers.convert import _enum_out, time_from_proto
from node.sharing import (
    AccessDecider,
    Permit,
    Touches,
    check_history_reader,
    check_quality_sample,
    is_provider,
)

_MATCH = {
    MatchResult.MATCH: sharing_pb2.MATCH_RESULT_MATCH,
    MatchResult.MISMATCH: sharing_pb2.MATCH_RESULT_MISMATCH,
    MatchResult.NOT_PRESENT: sharing_pb2.MATCH_RESULT_NOT_PRESENT,
}
_OPS = {
    sharing_pb2.QUERY_OPERATOR_EQ: "eq",
    sharing_pb2.QUERY_OPERATOR_PREFIX: "prefix",
    sharing_pb2.QUERY_OPERATOR_RANGE: "range",
}
SUBMIT_METHOD = "/govnode.v1.SharingService/Submit"
#: Most report ids one audit record names (a Compare of 10,000 disputed records names the first).
MAX_AUDITED_DISPUTES = 50
#: A message of several Compare results is sent once it holds this many bytes, however few
#: results that is: a caller's long refs must not make a message the server cannot send.
RESULTS_MESSAGE_BYTES = 1024 * 1024
_KINDS = {
    "upsert": sharing_pb2.RECORD_CHANGE_KIND_UPSERT,
    "delete": sharing_pb2.RECORD_CHANGE_KIND_DELETE,
}


def dispute_proto(dispute: Dispute | None) -> sharing_pb2.DataDispute | None:
    """The disputed mark (异议标注) of a record, None when it is not disputed."""
    return None if dispute is None else dispute_message(dispute)


def dispute_message(dispute: Dispute) -> sharing_pb2.DataDispute:
    out = sharing_pb2.DataDispute(
        report_ids=list(dispute.report_ids),
        items=list(dispute.items),
        open_reports=dispute.open_reports,
    )
    out.since.FromDatetime(dispute.since.astimezone(dt.UTC))
    return out


def note_disputes(disputes: Iterable[Dispute | None]) -> None:
    """Name the open reports an answer carried in the call's audit record (``disputed``), so
    the audit log knows who received a disputed record (a correction is sent to them)."""
    note_disputes_ids(dict.fromkeys(i for d in disputes if d is not None for i in d.report_ids))


def note_disputes_ids(ids: dict[str, None]) -> None:
    """:func:`note_disputes` of the report ids gathered so far (a stream's chunks)."""
    if ids:
        add_audit_detail(disputed=",".join(list(ids)[:MAX_AUDITED_DISPUTES]))


def _matches(outcome: VerifyOutcome) -> list[sharing_pb2.ItemMatch]:
    return [sharing_pb2.ItemMatch(item=item, result=_MATCH[r]) for item, r in outcome.matches]


def _compare_result(ref: str, outcome: VerifyOutcome) -> sharing_pb2.CompareResult:
    return sharing_pb2.CompareResult(
        ref=ref,
        found=outcome.found,
        matches=_matches(outcome),
        all_match=outcome.all_match,
        dispute=dispute_proto(outcome.dispute),
    )


def _compare_messages(
    results: Iterable[tuple[str, VerifyOutcome]], per_message: int
) -> Iterable[sharing_pb2.CompareResult]:
    """The streamed messages of Compare's ``results``: one each, or ``per_message`` in each
    message's ``results`` (fewer once a message holds :data:`RESULTS_MESSAGE_BYTES`)."""
    if per_message <= 1:
        for ref, outcome in results:
            yield _compare_result(ref, outcome)
        return
    message, size = sharing_pb2.CompareResult(), 0
    for ref, outcome in results:
        result = _compare_result(ref, outcome)
        size += result.ByteSize()
        message.results.append(result)
        if len(message.results) >= per_message or size >= RESULTS_MESSAGE_BYTES:
            yield message
            message, size = sharing_pb2.CompareResult(), 0
    if message.results:
        yield message


def submit_ack(outcome: BatchOutcome) -> sharing_pb2.SubmitAck:
    """The acknowledgement of one batch: at most node.records._rejections.MAX_ACK_BYTES."""
    ack = sharing_pb2.SubmitAck(
        batch_id=outcome.batch_id,
        accepted=outcome.accepted,
        rejected=outcome.rejected,
        rejections=[
            sharing_pb2.RecordRejection(index=r.index, item=r.item, reason=r.reason)
            for r in outcome.rejections
        ],
        duplicate=outcome.duplicate,
        held=len(outcome.held),
        held_records=[
            sharing_pb2.HeldRecord(index=h.index, change_request_id=h.change_request_id)
            for h in outcome.held
        ],
    )
    ack.committed_at.FromDatetime(outcome.committed_at)
    return ack


def _resource_code(code: str) -> str:
    if not code:
        raise InvalidArgument("resource_code is required")
    return code


class SharingServicer:
    """``router`` forwards Verify, Compare and Query on other regions' resources to their
    owner (node.federation._routing); without one, only local resources are served."""

    def __init__(
        self,
        catalog: Catalog,
        records: Records,
        audit: AuditSink | None,
        decider: AccessDecider,
        router: Router | None = None,
    ) -> None:
        self._catalog = catalog
        self._records = records
        self._audit = audit
        # The access decision: share type, grants, item scope and the Verify oracle.
        self._decider = decider
        self._router = router

    async def _decide(self, entry: ResourceEntry, method: ShareMethod, touches: Touches) -> Permit:
        """The caller's permit (the original caller's, on a call forwarded here)."""
        caller = current_peer().identity
        return await self._decider.decide(caller, entry, method, touches, current_request_id())

    def _remote(self, entry: ResourceEntry) -> Router | None:
        """The router when ``entry`` is owned by another node, else None."""
        if self._router is None or self._router.is_local(entry):
            return None
        return self._router

    async def _entry(self, code: str) -> ResourceEntry:
        return await self._catalog.get(_resource_code(code))

    async def Submit(
        self, requests: AsyncIterator[sharing_pb2.SubmitBatch], context: Any
    ) -> AsyncIterator[sharing_pb2.SubmitAck]:
        caller = current_peer().identity
        batches = accepted = rejected = held = 0
        async for request in requests:
            entry = await self._entry(request.resource_code)
            if self._remote(entry) is not None:
                raise FailedPrecondition(
                    f"resource {entry.resource_code} is held by the node of region "
                    f"{entry.region}: submit to your own node (only its provider submits)"
                )
            temporary = None
            if request.HasField("temporary"):
                temporary = TemporaryCollection(
                    reason=request.temporary.reason,
                    expires_at=time_from_proto(
                        request.temporary.expires_at, "temporary.expires_at"
                    ),
                    extra_items=tuple(request.temporary.extra_items),
                )
            outcome = await self._records.submit(
                caller,
                entry,
                SubmitBatch(
                    batch_id=request.batch_id,
                    records=tuple(dict(r.values) for r in request.records),
                    temporary=temporary,
                ),
            )
            batches += 1
            accepted += outcome.accepted
            rejected += outcome.rejected
            held += len(outcome.held)
            add_audit_detail(batches=batches, accepted=accepted, rejected=rejected, held=held)
            if self._audit is not None:
                # One record per batch, durable before its acknowledgement leaves (第三十九条).
                await self._audit.record(
                    CallRecord(
                        method=SUBMIT_METHOD,
                        caller=str(caller),
                        origin_node="",
                        resource_code=entry.resource_code,
                        outcome="OK",
                        message=DUPLICATE_BATCH_MESSAGE if outcome.duplicate else "",
                        request_digest=hashlib.sha256(request.SerializeToString()).hexdigest(),
                        request_id=current_request_id(),
                        detail={
                            "batch_id": outcome.batch_id,
                            "accepted": outcome.accepted,
                            "rejected": outcome.rejected,
                            "held": len(outcome.held),
                            "temporary": int(temporary is not None),
                            # Records refused for items outside the catalog (第十二条), which
                            # supervision counts (第四十二条第一项).
                            "undeclared": len(
                                {r.index for r in outcome.rejections if UNDECLARED in r.reason}
                            ),
                        },
                    )
                )
            yield submit_ack(outcome)

    async def Verify(
        self, request: sharing_pb2.VerifyRequest, context: Any
    ) -> sharing_pb2.VerifyResponse:
        entry = await self._entry(request.resource_code)
        router = self._remote(entry)
        if router is not None:
            reply: sharing_pb2.VerifyResponse = await router.unary(
                entry, "Verify", request, sharing_pb2.VerifyResponse, context
            )
            return reply
        await self._decide(entry, ShareMethod.VERIFY, Touches.verify(request.key, request.claimed))
        outcome = await self._records.verify(entry, dict(request.key), dict(request.claimed))
        note_disputes([outcome.dispute])
        return sharing_pb2.VerifyResponse(
            found=outcome.found,
            matches=_matches(outcome),
            all_match=outcome.all_match,
            request_id=current_request_id(),
            dispute=dispute_proto(outcome.dispute),
        )

    async def Compare(
        self, request: sharing_pb2.CompareRequest, context: Any
    ) -> AsyncIterator[sharing_pb2.CompareResult]:
        if request.results_per_message > MAX_COMPARE_RESULTS_PER_MESSAGE:
            raise InvalidArgument(
                f"results_per_message: at most {MAX_COMPARE_RESULTS_PER_MESSAGE:,} results in one "
                f"message, got {request.results_per_message:,}"
            )
        entry = await self._entry(request.resource_code)
        router = self._remote(entry)
        if router is not None:
            async for result in router.stream(
                entry, "Compare", request, sharing_pb2.CompareResult, context
            ):
                yield result
            return
        touches = Touches.compare((r.key, r.claimed) for r in request.records)
        if request.quality_sample_for:
            # The authority's 一致性 sample: no grant, no oracle budget (node.sharing).
            sampled = await self._catalog.get(request.quality_sample_for)
            check_quality_sample(current_peer().identity, entry, sampled, touches)
            add_audit_detail(quality_sample_for=sampled.resource_code)
        else:
            await self._decide(entry, ShareMethod.COMPARE, touches)
        results = await self._records.compare(
            entry, [(r.ref, dict(r.key), dict(r.claimed)) for r in request.records]
        )
        add_audit_detail(records=len(results))
        note_disputes(outcome.dispute for _, outcome in results)
        for message in _compare_messages(results, request.results_per_message):
            yield message

    async def Query(
        self, request: sharing_pb2.QueryRequest, context: Any
    ) -> sharing_pb2.QueryResponse:
        entry = await self._entry(request.resource_code)
        router = self._remote(entry)
        if router is not None:
            reply: sharing_pb2.QueryResponse = await router.unary(
                entry, "Query", request, sharing_pb2.QueryResponse, context
            )
            return reply
        touches = Touches.query(request.key, (f.item for f in request.filters), request.items)
        permit = await self._decide(entry, ShareMethod.QUERY, touches)
        filters = []
        for i, f in enumerate(request.filters):
            op = _OPS.get(f.op)
            if op is None:
                raise InvalidArgument(f"filters[{i}].op: EQ, PREFIX or RANGE is required")
            filters.append(
                QueryFilter(item=f.item, op=op, value=f.value, lower=f.lower, upper=f.upper)
            )
        page = await self._records.query(
            entry,
            key=dict(request.key) or None,
            filters=filters,
            items=list(request.items),
            visible_items=permit.visible_items,
            clear_items=permit.clear_items,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        add_audit_detail(rows=len(page.rows))
        note_disputes(row.dispute for row in page.rows)
        return sharing_pb2.QueryResponse(
            rows=[
                sharing_pb2.QueryRow(
                    record=common_pb2.Record(values=row.values),
                    version=row.version,
                    masked_items=list(row.masked_items),
                    dispute=dispute_proto(row.dispute),
                )
                for row in page.rows
            ],
            next_page_token=page.next_page_token,
            truncated=page.truncated,
        )

    async def GetRecordHistory(
        self, request: sharing_pb2.GetRecordHistoryRequest, context: Any
    ) -> sharing_pb2.GetRecordHistoryResponse:
        """Every version of one record, in clear (第四十一条), in pages, for the provider,
        this node's authority, and a tester on a probe resource."""
        caller = current_peer().identity
        entry = await self._entry(request.resource_code)
        if self._remote(entry) is not None:
            raise FailedPrecondition(
                f"resource {entry.resource_code} is held by the node of region {entry.region}: "
                "its records' history is read there"
            )
        check_history_reader(caller, entry, self._records.region)
        versions, token = await self._records.record_history_page(
            entry,
            dict(request.key),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        out = []
        for v in versions:
            msg = sharing_pb2.RecordVersion(
                version=v.version,
                kind=_KINDS[v.kind],
                sequence=v.data_seq,
                written_by=v.submitted_by,
                temporary=v.temporary_reason is not None,
            )
            if v.batch_id.startswith(CHANGE_BATCH_PREFIX):
                msg.change_request_id = v.batch_id.removeprefix(CHANGE_BATCH_PREFIX)
            else:
                msg.batch_id = v.batch_id
            if v.kind != "delete":
                msg.record.CopyFrom(common_pb2.Record(values=v.values))
            msg.at.FromDatetime(v.at)
            out.append(msg)
        return sharing_pb2.GetRecordHistoryResponse(versions=out, next_page_token=token)

    async def GetAggregationStatus(
        self, request: sharing_pb2.GetAggregationStatusRequest, context: Any
    ) -> sharing_pb2.GetAggregationStatusResponse:
        """汇聚 status (第二十一条): an agency sees its own resources; nodes see all. Probe
        resources are never counted, so a tester has nothing to see here (第三十一条).

        Paged like ListResources (the catalog's page size and token), over the resources
        before they are filtered, so a page may hold fewer statuses than ``page_size`` (or
        none) while ``next_page_token`` still names a next one."""
        caller = current_peer().identity
        if caller.role is Role.TESTER:
            raise PermissionDenied(
                f"{caller} may not read aggregation status: it covers agencies' resources, and "
                "probe resources are never counted in it (tester identities may use only probe "
                "resources, 第三十一条)"
            )
        provider = request.provider_code
        if caller.role is Role.AGENCY:
            provider = caller.subject
        entries, token = await self._catalog.list(
            provider_code=provider or None,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        own = [
            e
            for e in entries
            if not e.probe and (caller.role is not Role.AGENCY or is_provider(caller, e))
        ]
        statuses = await self._records.aggregation_status(own)
        out = []
        for s, e in zip(statuses, own, strict=True):
            if request.overdue_only and not s.overdue:
                continue
            msg = sharing_pb2.AggregationStatus(
                resource_code=s.resource_code,
                provider_code=e.provider_code,
                update_cycle=_enum_out("UpdateCycle", e.update_cycle),  # type: ignore[arg-type]
                overdue=s.overdue,
                record_count=s.record_count,
                data_version=s.data_version,
            )
            if s.last_aggregated_at is not None:
                msg.last_aggregated_at.FromDatetime(s.last_aggregated_at)
            if s.due_at is not None:
                msg.due_at.FromDatetime(s.due_at)
            out.append(msg)
        return sharing_pb2.GetAggregationStatusResponse(statuses=out, next_page_token=token)
