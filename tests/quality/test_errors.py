"""Error reports (纠错, 第十六条) over a real province node with mutual TLS on loopback, on SQLite
and PostgreSQL: a consumer that received a record reports it wrong; the record is marked
disputed at once in Verify, Compare and Query answers (and in their audit records); the provider
and the authority are notified; the provider confirms the stored value and the mark is lifted.
Every refusal is asserted with its message."""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
import pytest
from govnode.v1 import (
    access_pb2,
    common_pb2,
    quality_pb2,
    quality_pb2_grpc,
    sharing_pb2,
    sharing_pb2_grpc,
)

from gateway.identity import parse_spiffe
from gateway.tls import TlsFiles
from node.app import RunningNode
from node.audit import AuditLog
from node.catalog import ShareMethod, ShareType
from node.quality import DataErrors, ErrorFilter
from node.sharing import AccessDecider, Notifications
from tests.quality.test_quality_service import get_report
from tests.support.access import (
    ACME,
    COND,
    ITEMS,
    KIND,
    OPEN,
    Province,
    access,
    notifications,
    query,
    refused,
    register,
    sharing,
    submit,
    verify,
)
from tests.support.cli import cli
from tests.support.entries import agency_code
from tests.support.exchange import exchange, read_changes
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    MARKET_REGULATION,
    PROVINCE,
    PUBLIC_SECURITY,
    channel,
    entry_of,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

TD = "fujian.gov.cn"
CIVIL = f"spiffe://350000.{TD}/agency/{CIVIL_AFFAIRS}"
MARKET = f"spiffe://350000.{TD}/agency/{MARKET_REGULATION}"
KEY = {"tyshxydm": ACME["tyshxydm"]}
S = quality_pb2


async def quality(node: RunningNode, files: TlsFiles, method: str, request: Any) -> Any:
    async with channel(node, files) as ch:
        return await getattr(quality_pb2_grpc.QualityServiceStub(ch), method)(request, timeout=5)


def report_request(code: str = OPEN.resource_code, **fields: Any) -> S.ReportDataErrorRequest:
    values: dict[str, Any] = {
        "resource_code": code,
        "key": KEY,
        "item": "qymc",
        "description": "企业名称已于2026年变更",
        "suggested_value": "福州某某信息技术有限公司",
        "evidence": "市场监管局变更登记通知书 (2026) 第12号",
    } | fields
    return S.ReportDataErrorRequest(**values)


async def report(node: RunningNode, files: TlsFiles, **fields: Any) -> S.DataErrorReport:
    reply = await quality(node, files, "ReportDataError", report_request(**fields))
    report: S.DataErrorReport = reply.report
    return report


async def refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    err = await refused(call)
    return err.code(), err.details() or ""


async def test_a_consumer_reports_the_record_is_disputed_until_the_provider_confirms(
    province: Province,
) -> None:
    setup, node = province
    provider = setup.agency(PUBLIC_SECURITY)
    civil = setup.agency(CIVIL_AFFAIRS)
    authority = setup.authority()
    await register(node, provider, OPEN)
    await submit(node, provider, OPEN.resource_code, [ACME])

    # Before the record is disputed, answers carry no mark.
    answer = await sharing(node, civil, "Verify", verify(OPEN.resource_code, qymc=ACME["qymc"]))
    assert answer.all_match and not answer.HasField("dispute")

    made = await report(node, civil, request_id="r-1")
    assert made.id.startswith("350000-E-") and made.status == S.DATA_ERROR_STATUS_OPEN
    assert made.reporter.identity == CIVIL and made.provider_code == PUBLIC_SECURITY
    assert dict(made.key) == KEY and made.item == "qymc"
    assert made.evidence.startswith("市场监管局") and not made.overdue
    assert made.due_at.ToSeconds() - made.reported_at.ToSeconds() == 7 * 86400
    # A retry with the same request id is the same report, not a second one.
    assert (await report(node, civil, request_id="r-1")).id == made.id

    # Verify, Compare and Query answers carry the mark, to every consumer.
    answer = await sharing(node, civil, "Verify", verify(OPEN.resource_code, qymc=ACME["qymc"]))
    assert list(answer.dispute.report_ids) == [made.id]
    assert list(answer.dispute.items) == ["qymc"] and answer.dispute.open_reports == 1
    assert answer.dispute.since == made.reported_at
    market = setup.agency(MARKET_REGULATION)
    [row] = (await sharing(node, market, "Query", query(OPEN.resource_code))).rows
    assert list(row.dispute.report_ids) == [made.id]
    compared = await sharing(
        node,
        market,
        "Compare",
        sharing_pb2.CompareRequest(
            resource_code=OPEN.resource_code,
            records=[
                sharing_pb2.CompareRecord(ref="a", key=KEY, claimed={"qymc": ACME["qymc"]}),
                sharing_pb2.CompareRecord(
                    ref="b", key={"tyshxydm": "91350100MA00000028"}, claimed={"qymc": "x"}
                ),
            ],
        ),
    )
    assert [list(r.dispute.report_ids) for r in compared] == [[made.id], []]

    # Who received the disputed record is in the audit log.
    records = await AuditLog(node.db).query(resource_code=OPEN.resource_code, limit=100)
    marked = [(r.caller, r.method.rsplit("/", 1)[1]) for r in records if r.detail.get("disputed")]
    assert marked == [(CIVIL, "Verify"), (MARKET, "Query"), (MARKET, "Compare")]
    assert all(r.detail["disputed"] == made.id for r in records if r.detail.get("disputed"))

    # The provider and the authority are told, with the report's id.
    for files in (provider, authority):
        [note] = [
            n
            for n in await notifications(node, files)
            if n.kind == KIND.NOTIFICATION_KIND_DATA_ERROR_REPORTED
        ]
        assert note.data_error_id == made.id and note.resource_code == OPEN.resource_code
        assert "企业名称已于2026年变更" in note.message

    # The provider, the reporter and the authority list it; another agency sees nothing.
    for files in (provider, civil, authority):
        listed = await quality(node, files, "ListDataErrors", S.ListDataErrorsRequest())
        assert [r.id for r in listed.reports] == [made.id]
    listed = await quality(node, market, "ListDataErrors", S.ListDataErrorsRequest())
    assert list(listed.reports) == []
    assert await refusal(
        quality(node, market, "GetDataError", S.GetDataErrorRequest(id=made.id))
    ) == (
        grpc.StatusCode.PERMISSION_DENIED,
        f"{MARKET} may not see error report {made.id}: it is seen by its reporter, the "
        "resource's provider and the data management authority",
    )
    got = await quality(node, civil, "GetDataError", S.GetDataErrorRequest(id=made.id))
    assert got.report == made
    assert (
        await refusal(quality(node, civil, "GetDataError", S.GetDataErrorRequest(id="350000-E-00")))
    ) == (grpc.StatusCode.NOT_FOUND, "error report '350000-E-00' does not exist at this node")

    # Only the provider (or the authority) resolves, and a rejection says why.
    def resolve(**fields: Any) -> S.ResolveDataErrorRequest:
        return S.ResolveDataErrorRequest(
            id=made.id, resolution=S.DATA_ERROR_STATUS_REJECTED, **fields
        )

    assert await refusal(quality(node, civil, "ResolveDataError", resolve(note="我认为没错"))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        f"{CIVIL} may not resolve error report {made.id}: the provider of resource "
        f"{OPEN.resource_code} (agency {PUBLIC_SECURITY} of region 350000) or this node's data "
        "management authority resolves it",
    )
    assert await refusal(quality(node, provider, "ResolveDataError", resolve())) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "note: required (why the stored value is right)",
    )
    unknown = S.ResolveDataErrorRequest(id=made.id, resolution=S.DATA_ERROR_STATUS_OPEN, note="x")
    assert await refusal(quality(node, provider, "ResolveDataError", unknown)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "resolution: REJECTED (the stored value is right) or CORRECTED (a change request with "
        "corrected_values, 第四十一条)",
    )
    mixed = resolve(note="x", corrected_values={"qymc": "y"})
    assert await refusal(quality(node, provider, "ResolveDataError", mixed)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "corrected_values: only for CORRECTED",
    )

    done = await quality(
        node, provider, "ResolveDataError", resolve(note="经核对登记档案，名称未变更")
    )
    assert done.report.status == S.DATA_ERROR_STATUS_REJECTED
    assert done.report.resolved_by.subject == PUBLIC_SECURITY
    assert done.report.resolution_note == "经核对登记档案，名称未变更"
    assert await refusal(quality(node, provider, "ResolveDataError", resolve(note="again"))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"error report {made.id} is rejected, not open: only an open report is resolved",
    )

    # The mark is lifted; the reporter is told the outcome.
    answer = await sharing(node, civil, "Verify", verify(OPEN.resource_code, qymc=ACME["qymc"]))
    assert answer.all_match and not answer.HasField("dispute")
    [note] = [
        n
        for n in await notifications(node, civil)
        if n.kind == KIND.NOTIFICATION_KIND_DATA_ERROR_RESOLVED
    ]
    assert note.data_error_id == made.id and "原数据无误" in note.message


async def test_who_may_report(province: Province) -> None:
    setup, node = province
    provider = setup.agency(PUBLIC_SECURITY)
    civil = setup.agency(CIVIL_AFFAIRS)
    market = setup.agency(MARKET_REGULATION)
    await register(node, provider, OPEN)
    await register(node, provider, COND)
    await submit(node, provider, OPEN.resource_code, [ACME])

    # A consumer that received nothing from the resource, whatever the key.
    message = (
        f"{CIVIL} received nothing from resource {OPEN.resource_code} in the last 90 days (no "
        "Verify, Compare, Query, Exchange or Subscribe call served): only a consumer that "
        "received a record reports it wrong (纠错, 第十六条)"
    )
    assert await refusal(report(node, civil)) == (grpc.StatusCode.PERMISSION_DENIED, message)
    absent = {"tyshxydm": "91350100MA00000028"}
    assert await refusal(report(node, civil, key=absent)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        message,
    )
    # A refused call is not receiving.
    await refused(sharing(node, civil, "Query", query(OPEN.resource_code, items=("nope",))))
    assert await refusal(report(node, civil)) == (grpc.StatusCode.PERMISSION_DENIED, message)

    # A 有条件共享 resource without a grant: no right, so no word on whether the record exists.
    code, text = await refusal(report(node, market, code=COND.resource_code, key=absent))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert text.startswith(f"resource {COND.resource_code} ({COND.name}) is 有条件共享")

    # The provider corrects its own data by a change request.
    assert await refusal(report(node, provider)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        f"agency {PUBLIC_SECURITY} is the provider of resource {OPEN.resource_code}: a provider "
        "corrects its own data by a change request (AccessService.RequestRecordChange, "
        "第四十一条), not by an error report",
    )
    # An authority is not a consumer.
    code, text = await refusal(report(node, setup.authority()))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert text.endswith(
        "is not an agency: error reports (纠错, 第十六条) are made by the agencies that "
        "received the data"
    )

    # Once it received data: the record must exist (NOT_FOUND), the request be well formed.
    await sharing(node, civil, "Query", query(OPEN.resource_code))
    assert await refusal(report(node, civil, key=absent)) == (
        grpc.StatusCode.NOT_FOUND,
        f"resource {OPEN.resource_code} has no record with that key",
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"description": " "}, "description: required (what is wrong)"),
        ({"description": "x" * 2001}, "description: at most 2000 characters, got 2001"),
        ({"evidence": "x" * 5000}, "evidence: at most 2000 characters, got 5000"),
        ({"suggested_value": "x" * 2001}, "suggested_value: at most 2000 characters, got 2001"),
        ({"item": "n" * 500}, f"item: '{'n' * 60}"),
        ({"key": {}}, "key: missing key item(s) tyshxydm"),
        ({"request_id": "x" * 129}, "request_id: at most 128 printable characters"),
    ]
    for fields, expected in cases:
        code, text = await refusal(report(node, civil, **fields))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (fields, text)
        assert text.startswith(expected), (fields, text)
        assert len(text) < 300
    code, text = await refusal(report(node, civil, code=""))
    assert (code, text) == (grpc.StatusCode.INVALID_ARGUMENT, "resource_code is required")

    made = await report(node, civil)
    # One open report per reporter, record and item.
    assert await refusal(report(node, civil)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"{CIVIL} already has report {made.id} open on this record and item; it is resolved "
        "before another is made",
    )
    # A whole-record report is another one.
    whole = await report(node, civil, item="")
    answer = await sharing(node, civil, "Verify", verify(OPEN.resource_code, qymc=ACME["qymc"]))
    assert list(answer.dispute.report_ids) == [made.id, whole.id]
    assert list(answer.dispute.items) == ["qymc", ""] and answer.dispute.open_reports == 2

    # Lists: filters and pages.
    authority = setup.authority()
    page = await quality(node, authority, "ListDataErrors", S.ListDataErrorsRequest(page_size=1))
    assert [r.id for r in page.reports] == [whole.id] and page.next_page_token
    page = await quality(
        node,
        authority,
        "ListDataErrors",
        S.ListDataErrorsRequest(page_size=1, page_token=page.next_page_token),
    )
    assert [r.id for r in page.reports] == [made.id] and not page.next_page_token
    overdue = await quality(
        node, authority, "ListDataErrors", S.ListDataErrorsRequest(overdue_only=True)
    )
    assert list(overdue.reports) == []
    rejected = await quality(
        node,
        authority,
        "ListDataErrors",
        S.ListDataErrorsRequest(status=S.DATA_ERROR_STATUS_REJECTED),
    )
    assert list(rejected.reports) == []

    # The authority of the node resolves too; one report resolved leaves the other's mark.
    await quality(
        node,
        authority,
        "ResolveDataError",
        S.ResolveDataErrorRequest(
            id=made.id, resolution=S.DATA_ERROR_STATUS_REJECTED, note="名称无误"
        ),
    )
    answer = await sharing(node, civil, "Verify", verify(OPEN.resource_code, qymc=ACME["qymc"]))
    assert list(answer.dispute.report_ids) == [whole.id]
    assert [n.kind for n in await notifications(node, civil)] == [
        access_pb2.NOTIFICATION_KIND_DATA_ERROR_RESOLVED
    ]


BULK = entry_of(
    PROVINCE,
    3,
    items=ITEMS,
    share_methods=(
        ShareMethod.VERIFY,
        ShareMethod.QUERY,
        ShareMethod.EXCHANGE,
        ShareMethod.SUBSCRIBE,
    ),
    share_type=ShareType.UNCONDITIONAL,
)


async def test_a_correction_through_an_approved_change_request_reaches_who_received_the_record(
    province: Province,
) -> None:
    setup, node = province
    provider = setup.agency(PUBLIC_SECURITY)
    civil = setup.agency(CIVIL_AFFAIRS)
    market = setup.agency(MARKET_REGULATION)
    fourth_code = agency_code(4, PROVINCE)
    fourth = setup.agency(fourth_code)
    authority = setup.authority()
    code = BULK.resource_code
    await register(node, provider, BULK)
    await submit(node, provider, code, [ACME])

    # 市场监管 holds a bulk copy (Exchange before the report); 民政 queries and reports.
    await exchange(node, market, sharing_pb2.ExchangeRequest(resource_code=code))
    await sharing(node, civil, "Query", query(code))
    made = await report(node, civil, code=code)
    # A fourth agency receives the record while it is disputed.
    answer = await sharing(node, fourth, "Verify", verify(code, qymc=ACME["qymc"]))
    assert list(answer.dispute.report_ids) == [made.id]
    # Exchange carries the mark per record (by its index in the chunk).
    [chunk] = await exchange(node, market, sharing_pb2.ExchangeRequest(resource_code=code))
    assert list(chunk.disputes) == [0]
    assert list(chunk.disputes[0].report_ids) == [made.id]
    # So does Subscribe, per change (the record's mark as the change is sent).
    async with channel(node, market) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Subscribe(
            sharing_pb2.SubscribeRequest(resource_code=code)
        )
        [change] = await read_changes(call, 1)
        call.cancel()
    assert list(change.dispute.report_ids) == [made.id]

    def correct(values: dict[str, str] | None = None, **fields: Any) -> S.ResolveDataErrorRequest:
        return S.ResolveDataErrorRequest(
            id=made.id,
            resolution=S.DATA_ERROR_STATUS_CORRECTED,
            note=fields.pop("note", "依变更登记通知书更正企业名称"),
            corrected_values={"qymc": "福州某某信息技术有限公司"} if values is None else values,
            **fields,
        )

    # The reporter does not ask for the correction: the provider does (or the authority).
    assert await refusal(quality(node, civil, "ResolveDataError", correct())) == (
        grpc.StatusCode.PERMISSION_DENIED,
        f"{CIVIL} may not ask for the correction of error report {made.id}: the provider of "
        f"resource {code} (agency {PUBLIC_SECURITY}) or this node's data management authority "
        "asks, by a change request the authority approves (第四十一条)",
    )
    assert await refusal(quality(node, provider, "ResolveDataError", correct({}))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "corrected_values: required for CORRECTED (the record's new values)",
    )
    code_, message = await refusal(
        quality(node, provider, "ResolveDataError", correct({"nope": "x"}))
    )
    assert code_ == grpc.StatusCode.INVALID_ARGUMENT and "nope" in message
    assert await refusal(quality(node, provider, "ResolveDataError", correct(note=""))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "note: required (what the correction is)",
    )

    # Asked: a change request, linked; the record stays disputed.
    asked = (await quality(node, provider, "ResolveDataError", correct(request_id="c-1"))).report
    assert asked.status == S.DATA_ERROR_STATUS_CORRECTION_REQUESTED
    assert asked.change_request_id.startswith("350000-C-")
    again = (await quality(node, provider, "ResolveDataError", correct(request_id="c-1"))).report
    assert again.change_request_id == asked.change_request_id
    answer = await sharing(node, civil, "Verify", verify(code, qymc=ACME["qymc"]))
    assert list(answer.dispute.report_ids) == [made.id]

    # The authority rejects it: the report is open again and the provider told so.
    rejected = access_pb2.ReviewChangeRequestRequest(
        id=asked.change_request_id,
        decision=common_pb2.REVIEW_DECISION_REJECT,
        comment="缺少核准文书",
    )
    await access(node, authority, "ReviewChangeRequest", rejected)
    got = (await quality(node, provider, "GetDataError", S.GetDataErrorRequest(id=made.id))).report
    assert got.status == S.DATA_ERROR_STATUS_OPEN and not got.change_request_id
    reopened = [
        n
        for n in await notifications(node, provider)
        if n.kind == KIND.NOTIFICATION_KIND_DATA_ERROR_REPORTED
        and n.change_request_id == asked.change_request_id
    ]
    assert len(reopened) == 1 and "缺少核准文书" in reopened[0].message

    # Asked again and approved: corrected, the mark lifted, everyone who received it told.
    asked = (await quality(node, provider, "ResolveDataError", correct())).report
    approved = access_pb2.ReviewChangeRequestRequest(
        id=asked.change_request_id, decision=common_pb2.REVIEW_DECISION_APPROVE
    )
    reviewed = await access(node, authority, "ReviewChangeRequest", approved)
    assert reviewed.change_request.applied_version == 2
    got = (await quality(node, civil, "GetDataError", S.GetDataErrorRequest(id=made.id))).report
    assert got.status == S.DATA_ERROR_STATUS_CORRECTED and got.corrected_version == 2
    answer = await sharing(node, civil, "Verify", verify(code, qymc="福州某某信息技术有限公司"))
    assert answer.all_match and not answer.HasField("dispute")
    resolved = [
        n
        for n in await notifications(node, civil)
        if n.kind == KIND.NOTIFICATION_KIND_DATA_ERROR_RESOLVED
    ]
    assert [n.data_error_id for n in resolved] == [made.id] and "已更正" in resolved[0].message
    # 市场监管 by its bulk copy; the fourth agency and 民政 received it while disputed (民政's
    # Verify above); the provider received nothing.
    for files, told in ((market, True), (fourth, True), (civil, True), (provider, False)):
        corrected = [
            n
            for n in await notifications(node, files)
            if n.kind == KIND.NOTIFICATION_KIND_DATA_CORRECTED
        ]
        assert [n.data_error_id for n in corrected] == ([made.id] if told else []), files


async def test_overdue_reports_count_for_supervision(province: Province) -> None:
    setup, node = province
    provider = setup.agency(PUBLIC_SECURITY)
    civil = setup.agency(CIVIL_AFFAIRS)
    await register(node, provider, OPEN)
    await submit(node, provider, OPEN.resource_code, [ACME])
    await sharing(node, civil, "Query", query(OPEN.resource_code))
    late = await report(node, civil)
    on_time = await report(node, civil, item="")
    await quality(
        node,
        provider,
        "ResolveDataError",
        S.ResolveDataErrorRequest(
            id=on_time.id, resolution=S.DATA_ERROR_STATUS_REJECTED, note="无误"
        ),
    )
    reported = late.reported_at.ToDatetime(tzinfo=dt.UTC)
    start, end = reported, reported + dt.timedelta(days=30)

    def errors_at(moment: dt.datetime) -> DataErrors:
        return DataErrors(
            node.db,
            AccessDecider(node.db),
            Notifications(node.db),
            node_region=PROVINCE,
            trust_domain=TD,
            clock=lambda: moment,
        )

    # Today both are within their week; eight days on, the open one is overdue.
    assert await errors_at(reported).overdue(PUBLIC_SECURITY, start, end) == (0, 2)
    later = reported + dt.timedelta(days=8)
    assert await errors_at(later).overdue(PUBLIC_SECURITY, start, end) == (1, 2)
    assert await errors_at(later).overdue(CIVIL_AFFAIRS, start, end) == (0, 0)
    authority = setup.authority()
    overdue, _ = await errors_at(later).list(
        parse_spiffe(f"spiffe://350000.{TD}/authority"), ErrorFilter(overdue_only=True)
    )
    assert [r.id for r in overdue] == [late.id]
    # GetQualityReport counts the open one.
    code, _, errors = await cli("quality", "check", "--config", setup.config_path)
    assert code == 0, errors
    got = await get_report(node, authority, OPEN.resource_code)
    assert got.open_data_errors == 1
