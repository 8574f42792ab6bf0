"""OpenDataService, 授权开放 (第三十二至三十五条): applications, the authority's review, keys and
use reports, translated to node.opendata's OpenApplications and OpenKeys.

Who calls what: the public portal submits applications and use reports on behalf of a member
of the public (the applicant is no certificate holder; the portal is), and reads an
application by its id; this node's data management authority lists, reviews, revokes and
reads the reports. Every call, refused or not, is in the audit log (the audit hook).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from govnode.v1 import common_pb2, opendata_pb2

from gateway.auth import current_peer
from gateway.identity import Identity, Role
from gateway.interceptors import add_audit_detail
from node.errors import InvalidArgument, PermissionDenied
from node.opendata import (
    ApplicantType,
    OpenApplication,
    OpenApplications,
    OpenApplicationStatus,
    OpenDraft,
    OpenKeys,
    OpenReview,
    OpenUse,
    PublicBudgets,
    UseReport,
)
from node.servicers.access import caller_proto
from node.servicers.convert import _ts
from node.servicers.open_catalog import spend_budget

_ENTITY_TYPES = {
    opendata_pb2.APPLICANT_ENTITY_TYPE_DOMESTIC_ENTERPRISE: ApplicantType.DOMESTIC_ENTERPRISE,
    opendata_pb2.APPLICANT_ENTITY_TYPE_UNIVERSITY: ApplicantType.UNIVERSITY,
    opendata_pb2.APPLICANT_ENTITY_TYPE_RESEARCH_INSTITUTE: ApplicantType.RESEARCH_INSTITUTE,
}
_ENTITY_TYPES_OUT = {v: k for k, v in _ENTITY_TYPES.items()}
_USES = {
    opendata_pb2.OPEN_DATA_USE_RESEARCH: OpenUse.RESEARCH,
    opendata_pb2.OPEN_DATA_USE_EDUCATION: OpenUse.EDUCATION,
    opendata_pb2.OPEN_DATA_USE_PUBLIC_WELFARE: OpenUse.PUBLIC_WELFARE,
    opendata_pb2.OPEN_DATA_USE_COMMERCIAL: OpenUse.COMMERCIAL,
}
_USES_OUT = {v: k for k, v in _USES.items()}
_STATUSES = {
    opendata_pb2.OPEN_APPLICATION_STATUS_PENDING: OpenApplicationStatus.PENDING,
    opendata_pb2.OPEN_APPLICATION_STATUS_APPROVED: OpenApplicationStatus.APPROVED,
    opendata_pb2.OPEN_APPLICATION_STATUS_REJECTED: OpenApplicationStatus.REJECTED,
}
_STATUSES_OUT = {v: k for k, v in _STATUSES.items()}
_CODE_CHARS = 15
_ID_CHARS = 64


def is_portal(caller: Identity) -> bool:
    """Whether ``caller`` is an open data portal of this node's trust domain (its role, from
    its certificate)."""
    return caller.role is Role.PORTAL


def application_to_proto(app: OpenApplication) -> opendata_pb2.OpenApplication:
    message = opendata_pb2.OpenApplication(
        id=app.id,
        status=_STATUSES_OUT[app.status],
        resource_code=app.resource_code,
        entity_type=_ENTITY_TYPES_OUT[app.entity_type],
        entity_code=app.entity_code,
        entity_name=app.entity_name,
        use=_USES_OUT[app.use],
        purpose=app.purpose,
        submitted_by=caller_proto(app.submitted_by),
        request_id=app.request_id,
        created_at=_ts(app.created_at),
        reviewer=caller_proto(app.reviewer),
        reviewed_at=_ts(app.reviewed_at),
        review_comment=app.review_comment,
        competitive_selection_ref=app.competitive_selection_ref,
        contact=app.contact,
        domestic_control_declared=app.domestic_control_declared,
        evidence_reference=app.evidence_reference,
        to_confirm=app.to_confirm,
    )
    if app.key is not None:
        message.not_after.FromDatetime(app.key.scope.not_after.astimezone(dt.UTC))
        message.items.extend(app.key.scope.items)
        message.key_id = app.key.key_id
        message.key_revoked = app.key.revoked
    return message


def report_to_proto(report: UseReport) -> opendata_pb2.UseReport:
    return opendata_pb2.UseReport(
        key_id=report.key_id,
        application_id=report.application_id,
        resource_code=report.resource_code,
        period=report.period.number,
        period_start=_ts(report.period.start),
        period_end=_ts(report.period.end),
        text=report.text,
        filed_by=report.filed_by,
        filed_at=_ts(report.filed_at),
    )


def _bounded(value: str, field: str, limit: int) -> str:
    if not value:
        raise InvalidArgument(f"{field}: required")
    if len(value) > limit:
        raise InvalidArgument(f"{field}: {value[:20]!r}… is longer than {limit} characters")
    return value


class OpenApplicationsServicer:
    def __init__(
        self,
        applications: OpenApplications,
        keys: OpenKeys,
        identity: Identity,
        budgets: PublicBudgets | None = None,
    ) -> None:
        """``budgets``: per member of the public, spent by a portal's calls (the applicant's,
        node.opendata._budget); None: none."""
        self._budgets = budgets
        self._applications = applications
        self._keys = keys
        self._node = identity

    def _authority(self, action: str) -> Identity:
        caller = current_peer().identity
        if caller.role is Role.AUTHORITY and caller.region == self._node.region:
            return caller
        raise PermissionDenied(
            f"{caller} may not {action}: only this node's data management authority "
            f"(数据管理机构 of {self._node.region}) does (第三十三条)"
        )

    def _portal(self, action: str) -> Identity:
        caller = current_peer().identity
        if is_portal(caller) and caller.region == self._node.region:
            return caller
        raise PermissionDenied(
            f"{caller} may not {action}: the public reach 授权开放 through this node's open "
            "data portal (第三十条), which calls on their behalf"
        )

    async def ApplyOpenAccess(
        self, request: opendata_pb2.ApplyOpenAccessRequest, context: Any
    ) -> opendata_pb2.ApplyOpenAccessResponse:
        portal = self._portal("apply for 授权开放 data")
        spend_budget(self._budgets, portal, context)
        entity_type = _ENTITY_TYPES.get(request.entity_type)
        if entity_type is None:
            raise InvalidArgument(
                "entity_type: required: 内资控股法人企业, 高校 or 科研院所 (第三十二条)"
            )
        use = _USES.get(request.use)
        if use is None:
            raise InvalidArgument(
                "use: required: research, education, public welfare or commercial (第三十三条)"
            )
        draft = OpenDraft(
            resource_code=_bounded(request.resource_code, "resource_code", _CODE_CHARS),
            entity_type=entity_type,
            entity_code=request.entity_code[:40],
            entity_name=request.entity_name,
            contact=request.contact,
            use=use,
            purpose=request.purpose,
            domestic_control_declared=request.domestic_control_declared,
            evidence_reference=request.evidence_reference,
            request_id=request.request_id,
        )
        app = await self._applications.apply(portal, draft)
        add_audit_detail(application_id=app.id, entity_code=app.entity_code)
        return opendata_pb2.ApplyOpenAccessResponse(application=application_to_proto(app))

    async def GetOpenApplication(
        self, request: opendata_pb2.GetOpenApplicationRequest, context: Any
    ) -> opendata_pb2.GetOpenApplicationResponse:
        caller = current_peer().identity
        spend_budget(self._budgets, caller, context)
        if not is_portal(caller):
            self._authority("read open applications")
        elif caller.region != self._node.region:
            self._portal("read open applications")
        app = await self._applications.get(_bounded(request.id, "id", _ID_CHARS))
        return opendata_pb2.GetOpenApplicationResponse(application=application_to_proto(app))

    async def ListOpenApplications(
        self, request: opendata_pb2.ListOpenApplicationsRequest, context: Any
    ) -> opendata_pb2.ListOpenApplicationsResponse:
        self._authority("list open applications")
        status = _STATUSES.get(request.status)
        found, token = await self._applications.list_applications(
            status=status,
            resource_code=request.resource_code[:_CODE_CHARS],
            entity_code=request.entity_code[:40],
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return opendata_pb2.ListOpenApplicationsResponse(
            applications=[application_to_proto(a) for a in found], next_page_token=token
        )

    async def ReviewOpenApplication(
        self, request: opendata_pb2.ReviewOpenApplicationRequest, context: Any
    ) -> opendata_pb2.ReviewOpenApplicationResponse:
        authority = self._authority("review open applications")
        if request.decision not in (
            common_pb2.REVIEW_DECISION_APPROVE,
            common_pb2.REVIEW_DECISION_REJECT,
        ):
            raise InvalidArgument("decision: required: approve or reject")
        not_after = (
            request.not_after.ToDatetime(tzinfo=dt.UTC) if request.HasField("not_after") else None
        )
        review = OpenReview(
            approve=request.decision == common_pb2.REVIEW_DECISION_APPROVE,
            comment=request.comment,
            items=tuple(request.items),
            not_after=not_after,
            competitive_selection_ref=request.competitive_selection_ref,
            request_id=request.request_id,
        )
        application_id = _bounded(request.id, "id", _ID_CHARS)
        add_audit_detail(application_id=application_id)
        approval = await self._applications.review(authority, application_id, review)
        if approval.application.key is not None:
            add_audit_detail(key_id=approval.application.key.key_id)
        return opendata_pb2.ReviewOpenApplicationResponse(
            application=application_to_proto(approval.application), key=approval.key
        )

    async def RevokeOpenKey(
        self, request: opendata_pb2.RevokeOpenKeyRequest, context: Any
    ) -> opendata_pb2.RevokeOpenKeyResponse:
        authority = self._authority("revoke 授权开放 keys")
        key_id = _bounded(request.key_id, "key_id", 32)
        add_audit_detail(key_id=key_id)
        key = await self._keys.revoke(
            authority, key_id, request.reason, request_id=request.request_id
        )
        app = await self._applications.get(key.scope.application_id)
        return opendata_pb2.RevokeOpenKeyResponse(application=application_to_proto(app))

    async def FileUseReport(
        self, request: opendata_pb2.FileUseReportRequest, context: Any
    ) -> opendata_pb2.FileUseReportResponse:
        portal = self._portal("file use reports")
        spend_budget(self._budgets, portal, context)
        report = await self._keys.file_report(
            portal,
            request.text,
            key=_bounded(request.key, "key", 100),
            period=request.period,
            request_id=request.request_id,
        )
        add_audit_detail(key_id=report.key_id, period=report.period.number)
        return opendata_pb2.FileUseReportResponse(report=report_to_proto(report))

    async def ListUseReports(
        self, request: opendata_pb2.ListUseReportsRequest, context: Any
    ) -> opendata_pb2.ListUseReportsResponse:
        self._authority("read use reports")
        found, token = await self._keys.reports(
            key_id=request.key_id[:32],
            resource_code=request.resource_code[:_CODE_CHARS],
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return opendata_pb2.ListUseReportsResponse(
            reports=[report_to_proto(r) for r in found], next_page_token=token
        )
