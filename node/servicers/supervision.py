"""SupervisionService (监督检查, 第八、四十二条): compliance reports translated from
node.supervision for the agency itself, this node's authority and the province's authority."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from govnode.v1 import supervision_pb2

from gateway.auth import current_peer
from gateway.identity import authority_identity
from gateway.interceptors import add_audit_detail
from gateway.quote import quote
from node.codes import Region, region_problem
from node.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from node.federation import Router
from node.servicers.convert import time_from_proto
from node.supervision import (
    UNMEASURED,
    ComplianceReport,
    Figure,
    Finding,
    Kind,
    Notice,
    NoticeStatus,
    Rectifications,
    ReportAdmission,
    Supervision,
    check_agency_code,
    check_report_reader,
)

KIND_OUT: dict[Kind, int] = {
    Kind.OUT_OF_CATALOG: supervision_pb2.VIOLATION_KIND_OUT_OF_CATALOG_COLLECTION,
    Kind.DUPLICATE: supervision_pb2.VIOLATION_KIND_DUPLICATE_COLLECTION,
    Kind.LATE_AGGREGATION: supervision_pb2.VIOLATION_KIND_LATE_AGGREGATION,
    Kind.SHARED_DATA_MISUSE: supervision_pb2.VIOLATION_KIND_MISUSE_OF_SHARED_DATA,
    Kind.PROTECTED_DATA_MISUSE: supervision_pb2.VIOLATION_KIND_MISUSE_OF_PROTECTED_DATA,
    Kind.UNAPPROVED_CHANGE: supervision_pb2.VIOLATION_KIND_UNAPPROVED_CHANGE_OR_DELETION,
    Kind.OVERDUE_CORRECTIONS: supervision_pb2.VIOLATION_KIND_OVERDUE_CORRECTIONS,
    Kind.QUALITY: supervision_pb2.VIOLATION_KIND_QUALITY_GRADE,
}
KIND_IN: dict[int, Kind] = {number: kind for kind, number in KIND_OUT.items()}


def timestamp(moment: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(dt.UTC))
    return stamp


def kind_in(value: int, field: str = "kind") -> Kind:
    kind = KIND_IN.get(value)
    if kind is None:
        raise InvalidArgument(f"{field}: {value} is not a ViolationKind")
    return kind


def figure_to_proto(figure: Figure, *, term: bool = True) -> supervision_pb2.ComplianceFigure:
    """A figure on the wire; ``term``: with its Chinese label (a large table leaves it out)."""
    return supervision_pb2.ComplianceFigure(
        kind=KIND_OUT[figure.kind],  # type: ignore[arg-type]
        term=figure.kind.term if term else "",
        numerator=figure.numerator,
        denominator=figure.denominator,
        first_sequence=figure.first,
        last_sequence=figure.last,
        noted=figure.noted,
        grade="" if figure.value == UNMEASURED else figure.value,
        measured=figure.value != UNMEASURED,
    )


def _finding(finding: Finding) -> supervision_pb2.ComplianceFinding:
    return supervision_pb2.ComplianceFinding(
        kind=KIND_OUT[finding.kind],  # type: ignore[arg-type]
        resource_code=finding.resource_code,
        at=timestamp(finding.at),
        description=finding.description,
        audit_sequence=finding.sequence,
        request_id=finding.request_id,
    )


def report_to_proto(
    report: ComplianceReport, findings: list[Finding]
) -> supervision_pb2.ComplianceReport:
    return supervision_pb2.ComplianceReport(
        report_id=report.id,
        agency_code=report.agency_code,
        period_start=timestamp(report.period_start),
        period_end=timestamp(report.period_end),
        generated_at=timestamp(report.generated_at),
        figures=[figure_to_proto(f) for f in report.figures],
        findings=[_finding(f) for f in findings],
        audit_head_size=report.head_size,
        audit_head_hash=report.head_hash,
        window_first_sequence=report.window_first,
        window_last_sequence=report.window_last,
    )


_STATUS_OUT = {
    NoticeStatus.OPEN: supervision_pb2.RECTIFICATION_STATUS_OPEN,
    NoticeStatus.RECTIFIED: supervision_pb2.RECTIFICATION_STATUS_RECTIFIED,
    NoticeStatus.CRITICISED: supervision_pb2.RECTIFICATION_STATUS_CRITICISED,
}


def notice_to_proto(notice: Notice) -> supervision_pb2.RectificationNotice:
    out = supervision_pb2.RectificationNotice(
        id=notice.id,
        agency_code=notice.agency_code,
        kind=KIND_OUT[notice.kind],  # type: ignore[arg-type]
        note=notice.note,
        deadline=timestamp(notice.deadline),
        issued_by=notice.issued_by,
        issued_at=timestamp(notice.issued_at),
        status=_STATUS_OUT[notice.status],
        outcome=notice.outcome,
        issued_at_sequence=notice.issued_at_sequence,
    )
    if notice.closed_at is not None:
        out.closed_at.CopyFrom(timestamp(notice.closed_at))
    return out


class SupervisionServicer:
    def __init__(
        self,
        supervision: Supervision,
        rectifications: Rectifications,
        router: Router | None,
        admission: ReportAdmission,
    ) -> None:
        self._supervision = supervision
        #: Bounds on the new reports counted for callers ([supervision] reports_*).
        self._admission = admission
        self._rectifications = rectifications
        #: At the province: asks a city's node for its agency's report (province roll-up).
        self._router = router

    async def _routed_report(
        self, request: supervision_pb2.GetComplianceReportRequest, context: Any
    ) -> supervision_pb2.GetComplianceReportResponse | None:
        """The report from the node of ``request.region`` when it names another region (only
        the province's authority, at the province, for a city of the province); None: this
        node answers."""
        region = request.region
        own = self._supervision.region
        if not region or region == own:
            return None
        problem = region_problem(region)
        if problem is not None:
            raise InvalidArgument(f"region: {quote(region)} {problem}")
        province = Region(own).province_code
        if Region(region).is_province or not Region(province).contains(region):
            raise InvalidArgument(
                f"region: {region} is not a city of province {province}; its reports are not "
                "reachable from here"
            )
        caller = current_peer().identity
        authority = authority_identity(province, self._supervision.trust_domain)
        if caller.uri != authority:
            raise PermissionDenied(
                f"only the province's data management authority ({authority}) asks a city's "
                f"node for a compliance report (第八条); {caller.uri} may ask only the node of "
                "its own region"
            )
        if own != province or self._router is None:
            raise FailedPrecondition(
                f"this node ({own}) answers for its own region only: ask the province's node "
                f"for region {region}'s reports"
            )
        reply: supervision_pb2.GetComplianceReportResponse = await self._router.unary_to(
            region,
            "/govnode.v1.SupervisionService/GetComplianceReport",
            request,
            supervision_pb2.GetComplianceReportResponse,
            context,
        )
        add_audit_detail(routed_to=region, agency=reply.report.agency_code)
        return reply

    async def IssueRectificationNotice(
        self, request: supervision_pb2.IssueRectificationNoticeRequest, context: Any
    ) -> supervision_pb2.IssueRectificationNoticeResponse:
        if not request.kind:
            raise InvalidArgument("kind is required (the ViolationKind of the figure to rectify)")
        kind = kind_in(request.kind)
        if not request.HasField("deadline"):
            raise InvalidArgument("deadline is required")
        notice = await self._rectifications.issue(
            current_peer().identity,
            request.agency_code,
            kind,
            time_from_proto(request.deadline, "deadline"),
            request.note,
        )
        add_audit_detail(notice=notice.id, agency=notice.agency_code, kind=kind.value)
        return supervision_pb2.IssueRectificationNoticeResponse(notice=notice_to_proto(notice))

    async def ListRectificationNotices(
        self, request: supervision_pb2.ListRectificationNoticesRequest, context: Any
    ) -> supervision_pb2.ListRectificationNoticesResponse:
        notices, token = await self._rectifications.notices(
            current_peer().identity,
            agency_code=request.agency_code,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return supervision_pb2.ListRectificationNoticesResponse(
            notices=[notice_to_proto(n) for n in notices], next_page_token=token
        )

    async def ListPublishedCriticisms(
        self, request: supervision_pb2.ListPublishedCriticismsRequest, context: Any
    ) -> supervision_pb2.ListPublishedCriticismsResponse:
        notices, token = await self._rectifications.criticisms(
            request.page_size, request.page_token
        )
        return supervision_pb2.ListPublishedCriticismsResponse(
            notices=[notice_to_proto(n) for n in notices], next_page_token=token
        )

    async def GetComplianceReport(
        self, request: supervision_pb2.GetComplianceReportRequest, context: Any
    ) -> supervision_pb2.GetComplianceReportResponse:
        routed = await self._routed_report(request, context)
        if routed is not None:
            return routed
        caller = current_peer().identity
        supervision = self._supervision
        kind = kind_in(request.kind) if request.kind else None
        if request.report_id:
            report = await supervision.get(request.report_id)
            check_report_reader(
                caller, report.agency_code, supervision.region, supervision.trust_domain
            )
        else:
            if request.page_token:
                raise InvalidArgument(
                    "page_token: pages continue a stored report; send it with report_id"
                )
            code = check_agency_code(request.agency_code)
            check_report_reader(caller, code, supervision.region, supervision.trust_domain)
            if not request.HasField("period_start"):
                raise InvalidArgument("period_start is required")
            start = time_from_proto(request.period_start, "period_start")
            end = (
                time_from_proto(request.period_end, "period_end")
                if request.HasField("period_end")
                else supervision.now()
            )
            with self._admission.admitted(caller.uri):
                report = await supervision.generate(code, start, end, caller.uri)
        add_audit_detail(report=report.id, agency=report.agency_code)
        findings, token = supervision.page(report, kind, request.page_size, request.page_token)
        return supervision_pb2.GetComplianceReportResponse(
            report=report_to_proto(report, findings), next_page_token=token
        )
