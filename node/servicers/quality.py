"""QualityService (质量管控, 第十五、十六条): GetQualityReport, the newest quality check of a
resource this node owns, for its provider and its authorities; and error reports (纠错):
ReportDataError, ListDataErrors, GetDataError and ResolveDataError, translated from
node.quality.DataErrors. A report on another region's resource is forwarded to its owner (like
Apply), and a call naming a report by id to the node its id's region names (like
GetApplication): the owner decides for the original caller."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from govnode.v1 import quality_pb2

from gateway.auth import current_peer
from gateway.interceptors import add_audit_detail
from gateway.quote import quote
from node.catalog import Catalog
from node.errors import InvalidArgument
from node.federation import Router
from node.governance import ChangeRequests
from node.quality import (
    DataError,
    DataErrors,
    DataErrorStatus,
    DimensionScore,
    ErrorFilter,
    Indicator,
    Level,
    Quality,
    QualityReport,
    check_reader,
    region_of_error_id,
)
from node.servicers.access import caller_proto
from node.servicers.convert import item_to_proto

_SERVICE = "/govnode.v1.QualityService/"
#: Most items a correction names (a resource has at most this many items; the records domain
#: checks them against the entry).
MAX_CORRECTED_ITEMS = 500
_ERROR_STATUS = {
    DataErrorStatus.OPEN: quality_pb2.DATA_ERROR_STATUS_OPEN,
    DataErrorStatus.REJECTED: quality_pb2.DATA_ERROR_STATUS_REJECTED,
    DataErrorStatus.CORRECTION_REQUESTED: quality_pb2.DATA_ERROR_STATUS_CORRECTION_REQUESTED,
    DataErrorStatus.CORRECTED: quality_pb2.DATA_ERROR_STATUS_CORRECTED,
}
_ERROR_STATUS_IN = {v: k for k, v in _ERROR_STATUS.items()}


def _timestamp(moment: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(dt.UTC))
    return stamp


_LEVELS = {
    Level.OK: quality_pb2.QUALITY_LEVEL_OK,
    Level.WARN: quality_pb2.QUALITY_LEVEL_WARN,
    Level.CRITICAL: quality_pb2.QUALITY_LEVEL_CRITICAL,
    Level.UNMEASURED: quality_pb2.QUALITY_LEVEL_UNMEASURED,
}


def indicator_to_proto(indicator: Indicator) -> quality_pb2.QualityIndicator:
    score = indicator.score
    return quality_pb2.QualityIndicator(
        code=indicator.code,
        dimension=indicator.dimension.value,
        name=indicator.name,
        numerator=indicator.numerator,
        denominator=indicator.denominator,
        score=score or 0.0,
        measured=score is not None,
        counted=indicator.counted,
    )


def _dimension(d: DimensionScore) -> quality_pb2.QualityDimension:
    return quality_pb2.QualityDimension(
        dimension=d.dimension.value,
        term=d.dimension.term,
        score=d.score or 0.0,
        measured=d.score is not None,
        level=_LEVELS[d.level],
        indicators=[indicator_to_proto(i) for i in d.indicators],
    )


def data_error_to_proto(report: DataError, now: dt.datetime) -> quality_pb2.DataErrorReport:
    out = quality_pb2.DataErrorReport(
        id=report.id,
        status=_ERROR_STATUS[report.status],
        resource_code=report.resource_code,
        provider_code=report.provider_code,
        key=report.key,
        item=report.item,
        description=report.description,
        suggested_value=report.suggested_value,
        evidence=report.evidence,
        reporter=caller_proto(report.reporter),
        reported_at=_timestamp(report.reported_at),
        due_at=_timestamp(report.due_at),
        overdue=report.overdue(now),
        resolution_note=report.resolution_note,
        change_request_id=report.change_request_id,
        corrected_version=report.corrected_version,
    )
    if report.resolved_at is not None:
        out.resolved_at.CopyFrom(_timestamp(report.resolved_at))
    resolver = caller_proto(report.resolved_by)
    if resolver is not None:
        out.resolved_by.CopyFrom(resolver)
    return out


def _report_id(value: str) -> str:
    if not value:
        raise InvalidArgument("id is required")
    if len(value) > 64 or not value.isprintable():
        raise InvalidArgument(f"id: {quote(value)} is not an error report id")
    return value


def report_to_proto(
    report: QualityReport, rules: dict[str, Any], open_errors: int = 0
) -> quality_pb2.QualityReport:
    """``rules``: item name -> its ValidationRule message (from the entry's current items);
    ``open_errors``: the error reports open on the resource now."""
    timeliness = next(d for d in report.dimensions if d.dimension.value == "timeliness")
    point = next(i for i in timeliness.indicators if i.code == "050200")
    conformity = next(d for d in report.dimensions if d.dimension.value == "conformity")
    record_level = conformity.indicators[0]
    return quality_pb2.QualityReport(
        resource_code=report.resource_code,
        entry_version=report.entry_version,
        generated_at=_timestamp(report.checked_at),
        records=report.records,
        items=[
            quality_pb2.ItemQuality(
                item=i.item,
                rule=rules.get(i.item),
                required=i.required,
                passed=i.filled,
                failed=i.refused,
                missing=i.missing,
            )
            for i in report.items
        ],
        rejected_on_submit=record_level.denominator - record_level.numerator,
        open_data_errors=open_errors,
        aggregation_overdue=point.denominator == 1 and point.numerator == 0,
        provider_code=report.provider_code,
        window_start=_timestamp(report.window_start),
        dimensions=[_dimension(d) for d in report.dimensions],
        overall_score=report.overall or 0.0,
        overall_measured=report.overall is not None,
        grade=report.grade.value if report.grade else "",
        level=_LEVELS[report.level],
        warn_below=report.thresholds.warn_below,
        critical_below=report.thresholds.critical_below,
        drops=[
            quality_pb2.QualityDrop(
                dimension=d.dimension, score=d.score, baseline=d.baseline, checks=d.checks
            )
            for d in report.drops
        ],
        metadata=indicator_to_proto(report.metadata),
        rules=[indicator_to_proto(i) for i in report.rules],
        caller_refusals=report.caller_refusals,
        newest_data_age_seconds=(
            -1 if report.newest_data_age_seconds is None else report.newest_data_age_seconds
        ),
        consistency=[
            quality_pb2.ItemConsistency(
                item=c.item,
                element=c.element,
                source_resource=c.source_resource,
                source_item=c.source_item,
                compared=c.compared,
                matched=c.matched,
                mismatched=c.mismatched,
                not_found=c.not_found,
                mismatch_keys=list(c.mismatch_keys),
                unmeasured=c.unmeasured,
            )
            for c in report.consistency
        ],
    )


class QualityServicer:
    """``data_errors``: error reports (纠错), None to leave them UNIMPLEMENTED; ``router``
    forwards calls on what other nodes hold."""

    def __init__(
        self,
        catalog: Catalog,
        quality: Quality,
        trust_domain: str,
        data_errors: DataErrors | None = None,
        router: Router | None = None,
    ) -> None:
        self._catalog = catalog
        self._quality = quality
        self._trust_domain = trust_domain
        self._errors = data_errors
        self._router = router

    async def GetQualityReport(
        self, request: quality_pb2.GetQualityReportRequest, context: Any
    ) -> quality_pb2.GetQualityReportResponse:
        if not request.resource_code:
            raise InvalidArgument("resource_code is required")
        entry = await self._quality.entry(request.resource_code)
        check_reader(current_peer().identity, entry, self._trust_domain)
        report = await self._quality.latest(entry.resource_code)
        rules = {item.name: item_to_proto(item).validation for item in entry.items}
        open_errors = (
            0 if self._errors is None else await self._errors.open_count(entry.resource_code)
        )
        return quality_pb2.GetQualityReportResponse(
            report=report_to_proto(report, rules, open_errors)
        )


class DataErrorServicer:
    """ReportDataError, ListDataErrors, GetDataError and ResolveDataError (纠错, 第十六条)."""

    def __init__(
        self,
        catalog: Catalog,
        data_errors: DataErrors,
        changes: ChangeRequests,
        router: Router | None = None,
    ) -> None:
        self._catalog = catalog
        self._errors = data_errors
        self._changes = changes
        self._router = router

    async def _forward_by_id(
        self, report_id: str, method: str, request: Message, response_type: Any, context: Any
    ) -> Any:
        """The owner's answer when ``report_id`` names another region's node, else None."""
        region = region_of_error_id(report_id)
        if self._router is None or not region or region == self._errors.region:
            return None
        return await self._router.unary_to(
            region, _SERVICE + method, request, response_type, context
        )

    async def ReportDataError(
        self, request: quality_pb2.ReportDataErrorRequest, context: Any
    ) -> quality_pb2.ReportDataErrorResponse:
        if not request.resource_code:
            raise InvalidArgument("resource_code is required")
        entry = await self._catalog.get(request.resource_code)
        if self._router is not None and not self._router.is_local(entry):
            reply: quality_pb2.ReportDataErrorResponse = await self._router.unary(
                entry,
                _SERVICE + "ReportDataError",
                request,
                quality_pb2.ReportDataErrorResponse,
                context,
            )
            return reply
        report = await self._errors.report(
            current_peer().identity,
            entry,
            dict(request.key),
            item=request.item,
            description=request.description,
            suggested_value=request.suggested_value,
            evidence=request.evidence,
            request_id=request.request_id,
        )
        add_audit_detail(data_error=report.id)
        now = dt.datetime.now(dt.UTC)
        return quality_pb2.ReportDataErrorResponse(report=data_error_to_proto(report, now))

    async def GetDataError(
        self, request: quality_pb2.GetDataErrorRequest, context: Any
    ) -> quality_pb2.GetDataErrorResponse:
        report_id = _report_id(request.id)
        forwarded = await self._forward_by_id(
            report_id, "GetDataError", request, quality_pb2.GetDataErrorResponse, context
        )
        if forwarded is not None:
            reply: quality_pb2.GetDataErrorResponse = forwarded
            return reply
        report = await self._errors.get(current_peer().identity, report_id)
        now = dt.datetime.now(dt.UTC)
        return quality_pb2.GetDataErrorResponse(report=data_error_to_proto(report, now))

    async def ListDataErrors(
        self, request: quality_pb2.ListDataErrorsRequest, context: Any
    ) -> quality_pb2.ListDataErrorsResponse:
        status = None
        if request.status:
            status = _ERROR_STATUS_IN.get(request.status)
            if status is None:
                raise InvalidArgument(f"status: {request.status} is not a DataErrorStatus")
        for field in ("resource_code", "provider_code"):
            if len(getattr(request, field)) > 64:
                raise InvalidArgument(f"{field}: at most 64 characters")
        reports, token = await self._errors.list(
            current_peer().identity,
            ErrorFilter(
                resource_code=request.resource_code,
                provider_code=request.provider_code,
                status=status,
                overdue_only=request.overdue_only,
            ),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        now = dt.datetime.now(dt.UTC)
        return quality_pb2.ListDataErrorsResponse(
            reports=[data_error_to_proto(r, now) for r in reports], next_page_token=token
        )

    async def ResolveDataError(
        self, request: quality_pb2.ResolveDataErrorRequest, context: Any
    ) -> quality_pb2.ResolveDataErrorResponse:
        report_id = _report_id(request.id)
        forwarded = await self._forward_by_id(
            report_id, "ResolveDataError", request, quality_pb2.ResolveDataErrorResponse, context
        )
        if forwarded is not None:
            reply: quality_pb2.ResolveDataErrorResponse = forwarded
            return reply
        caller = current_peer().identity
        if request.resolution == quality_pb2.DATA_ERROR_STATUS_REJECTED:
            if request.corrected_values:
                raise InvalidArgument("corrected_values: only for CORRECTED")
            report = await self._errors.reject(
                caller, report_id, request.note, request_id=request.request_id
            )
        elif request.resolution == quality_pb2.DATA_ERROR_STATUS_CORRECTED:
            if len(request.corrected_values) > MAX_CORRECTED_ITEMS:
                raise InvalidArgument(
                    f"corrected_values: at most {MAX_CORRECTED_ITEMS} items, got "
                    f"{len(request.corrected_values)}"
                )
            report = await self._errors.correct(
                caller,
                report_id,
                dict(request.corrected_values),
                request.note,
                changes=self._changes,
                catalog=self._catalog,
                request_id=request.request_id,
            )
            add_audit_detail(change_request=report.change_request_id)
        else:
            raise InvalidArgument(
                "resolution: REJECTED (the stored value is right) or CORRECTED (a change "
                "request with corrected_values, 第四十一条)"
            )
        add_audit_detail(data_error=report.id)
        now = dt.datetime.now(dt.UTC)
        return quality_pb2.ResolveDataErrorResponse(report=data_error_to_proto(report, now))
