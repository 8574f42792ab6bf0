"""Data quality (质量管控, 第十五、十六条): each resource this node owns measured along the
GB/T 36344-2018 dimensions from govnode's own tables, scored, graded and kept as a dated
history, checked daily by the node and on demand by its operators.

- ``_types``: indicators, dimension scores, grades, thresholds, the report;
- ``_measure``: the SQL aggregates a check counts (records, Submit batches, the audit log);
- ``_metadata``: the catalog entry's own metadata score (GB/T 21063);
- ``_consistency``: 一致性, a sample checked against the authoritative source (一数一源);
- ``_checks``: scoring, drops against history, who may read a report, the stored checks;
- ``_schedule``: the daily check;
- ``_errors``: error reports (纠错, 第十六条): reporting, the disputed mark, resolving.
"""

from __future__ import annotations

from node.quality._checks import (
    CHECK_METHOD,
    MAX_HISTORY,
    PROVIDER_FAULTS,
    HistoryPoint,
    Quality,
    QualitySettings,
    build_report,
    check_reader,
    drops_of,
)
from node.quality._consistency import (
    COMPARE_SECONDS,
    MAX_MISMATCH_KEYS,
    CompareItems,
    SourceCompare,
    sample_order,
)
from node.quality._errors import (
    DataError,
    DataErrors,
    DataErrorStatus,
    ErrorFilter,
    ErrorSettings,
    count_overdue,
    region_of_error_id,
)
from node.quality._measure import SHARE_METHODS, Figures, measure
from node.quality._metadata import METADATA_CODE, metadata_indicator, metadata_missing
from node.quality._schedule import DailyCheck, next_run
from node.quality._types import (
    GRADE_BANDS,
    Basis,
    Dimension,
    DimensionScore,
    Drop,
    Grade,
    Indicator,
    ItemConsistency,
    ItemFigures,
    Level,
    QualityReport,
    Thresholds,
    grade_of,
    report_from_json,
    report_to_dict,
    report_to_json,
)

__all__ = [
    "CHECK_METHOD",
    "COMPARE_SECONDS",
    "GRADE_BANDS",
    "MAX_HISTORY",
    "MAX_MISMATCH_KEYS",
    "METADATA_CODE",
    "PROVIDER_FAULTS",
    "SHARE_METHODS",
    "Basis",
    "CompareItems",
    "DailyCheck",
    "DataError",
    "DataErrorStatus",
    "DataErrors",
    "Dimension",
    "DimensionScore",
    "Drop",
    "ErrorFilter",
    "ErrorSettings",
    "Figures",
    "Grade",
    "HistoryPoint",
    "Indicator",
    "ItemConsistency",
    "ItemFigures",
    "Level",
    "Quality",
    "QualityReport",
    "QualitySettings",
    "SourceCompare",
    "Thresholds",
    "build_report",
    "check_reader",
    "count_overdue",
    "drops_of",
    "grade_of",
    "measure",
    "metadata_indicator",
    "metadata_missing",
    "next_run",
    "region_of_error_id",
    "report_from_json",
    "report_to_dict",
    "report_to_json",
    "sample_order",
]
