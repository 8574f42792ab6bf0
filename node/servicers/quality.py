"""QualityService.GetQualityReport (质量管控, 第十五、十六条): the newest quality check of a
resource this node owns, translated from node.quality for its provider and its authorities."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from govnode.v1 import quality_pb2

from gateway.auth import current_peer
from node.catalog import Catalog
from node.errors import InvalidArgument
from node.quality import (
    DimensionScore,
    Indicator,
    Level,
    Quality,
    QualityReport,
    check_reader,
)
from node.servicers.convert import item_to_proto


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


def report_to_proto(report: QualityReport, rules: dict[str, Any]) -> quality_pb2.QualityReport:
    """``rules``: item name -> its ValidationRule message (from the entry's current items)."""
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
        open_data_errors=0,
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
    def __init__(self, catalog: Catalog, quality: Quality, trust_domain: str) -> None:
        self._catalog = catalog
        self._quality = quality
        self._trust_domain = trust_domain

    async def GetQualityReport(
        self, request: quality_pb2.GetQualityReportRequest, context: Any
    ) -> quality_pb2.GetQualityReportResponse:
        if not request.resource_code:
            raise InvalidArgument("resource_code is required")
        entry = await self._quality.entry(request.resource_code)
        check_reader(current_peer().identity, entry, self._trust_domain)
        report = await self._quality.latest(entry.resource_code)
        rules = {item.name: item_to_proto(item).validation for item in entry.items}
        return quality_pb2.GetQualityReportResponse(report=report_to_proto(report, rules))
