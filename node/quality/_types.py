"""What a quality check finds (数据质量, 第十五、十六条): indicators as numerator / denominator
with their GB/T 36344-2018 dimension and an indicator code, dimension scores, the overall grade
and the thresholds a score is held against.

Indicator codes follow the six dimensions of GB/T 36344 in the order the standard lists them,
numbered as Shanghai's DB31/T 1523-2024 numbers its indicators (01 规范性, 02 完整性, 03 准确性
with 唯一性 and 重复率, 04 一致性, 05 时效性, 06 可访问性). Every score is
higher-is-better: an indicator that counts defects (a resent batch) is reported as 1 − A/B in
its numerator, as DB31/T 1523 does.

Pure: no database, no grpc.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "GRADE_BANDS",
    "Basis",
    "Dimension",
    "DimensionScore",
    "Drop",
    "Grade",
    "Indicator",
    "ItemConsistency",
    "ItemFigures",
    "Level",
    "QualityReport",
    "Thresholds",
    "grade_of",
    "report_from_json",
    "report_to_dict",
    "report_to_json",
]


class Dimension(enum.StrEnum):
    """The GB/T 36344-2018 dimensions govnode measures."""

    CONFORMITY = "conformity"  # 规范性
    COMPLETENESS = "completeness"  # 完整性
    UNIQUENESS = "uniqueness"  # 唯一性 (GB/T 36344 准确性: 数据唯一性, 数据重复率)
    CONSISTENCY = "consistency"  # 一致性 (相同数据一致性, against the authoritative source)
    TIMELINESS = "timeliness"  # 时效性
    ACCESSIBILITY = "accessibility"  # 可访问性

    @property
    def term(self) -> str:
        return _TERMS[self]


_TERMS = {
    Dimension.CONFORMITY: "规范性",
    Dimension.COMPLETENESS: "完整性",
    Dimension.UNIQUENESS: "唯一性",
    Dimension.CONSISTENCY: "一致性",
    Dimension.TIMELINESS: "时效性",
    Dimension.ACCESSIBILITY: "可访问性",
}


class Grade(enum.StrEnum):
    """The overall grade, five bands of the 0-100 score (see :data:`GRADE_BANDS`)."""

    A = "A"  # 优
    B = "B"  # 良
    C = "C"  # 中
    D = "D"  # 差
    E = "E"  # 劣


#: (lowest score of the band, grade, term). Ten-point bands above 60, the pass line of
#: Chinese marking (优/良/中/及格/不及格), so that a grade reads as people already read scores;
#: DB11/T 2317-2024 rates in five grades too, but its thresholds could not be read.
GRADE_BANDS: tuple[tuple[float, Grade, str], ...] = (
    (90.0, Grade.A, "优"),
    (80.0, Grade.B, "良"),
    (70.0, Grade.C, "中"),
    (60.0, Grade.D, "差"),
    (0.0, Grade.E, "劣"),
)


def grade_of(score: float) -> Grade:
    for lowest, grade, _ in GRADE_BANDS:
        if score >= lowest:
            return grade
    return Grade.E


class Level(enum.StrEnum):
    """Where a score stands against the resource's thresholds."""

    OK = "ok"
    WARN = "warn"  # below warn_below
    CRITICAL = "critical"  # below critical_below
    UNMEASURED = "unmeasured"  # nothing to measure yet (every denominator 0)


@dataclass(frozen=True)
class Thresholds:
    """A score below ``warn_below`` warns, below ``critical_below`` is critical (0-100)."""

    warn_below: float = 80.0
    critical_below: float = 60.0

    def level(self, score: float | None) -> Level:
        if score is None:
            return Level.UNMEASURED
        if score < self.critical_below:
            return Level.CRITICAL
        if score < self.warn_below:
            return Level.WARN
        return Level.OK


@dataclass(frozen=True)
class Indicator:
    """One GB/T 36344 indicator of one resource: X = numerator / denominator."""

    code: str  # e.g. "010400", or "010400:sfzhm" for one item's rule
    dimension: Dimension
    name: str  # the indicator's name in the standard, e.g. 业务规则
    numerator: int
    denominator: int
    #: What was counted, in words (the formula).
    counted: str

    @property
    def score(self) -> float | None:
        """0-100, or None when there was nothing to count."""
        if self.denominator <= 0:
            return None
        return round(100.0 * self.numerator / self.denominator, 2)


@dataclass(frozen=True)
class DimensionScore:
    """A dimension's score: the mean of its measured indicators (DB31/T 1523's roll-up)."""

    dimension: Dimension
    score: float | None
    level: Level
    indicators: tuple[Indicator, ...]


@dataclass(frozen=True)
class Drop:
    """A score that fell more than the configured points below its recent mean."""

    dimension: str  # a Dimension value, or "overall"
    score: float
    baseline: float  # mean of the previous checks' scores
    checks: int  # how many previous checks the baseline is the mean of


@dataclass(frozen=True)
class ItemFigures:
    """One data item: current records with a value, without one, and records refused on
    submission naming this item in the window."""

    item: str
    rule: str  # the item's validation kind ("none": its data type only)
    required: bool
    filled: int
    missing: int
    refused: int


@dataclass(frozen=True)
class ItemConsistency:
    """一致性 of one item against its authoritative source (一数一源): a sample of the
    resource's records with a value for the item, checked by key against the source resource
    (Compare semantics). Counts and key digests only, never a value.

    ``compared``: records sent; ``matched`` + ``mismatched``: those found at the source (the
    indicator's denominator), a source record without a value for the item counting as a
    mismatch; ``not_found``: keys the source has no record for, shown apart. ``mismatch_keys``:
    :func:`node.sharing.key_digest` of the mismatching records' keys in this resource, hex, at
    most 20. ``unmeasured``: why nothing was compared (no way to key the source, the source
    node unreachable or refusing), "" when measured."""

    item: str
    element: str  # the standard data element (标准数据元)
    source_resource: str  # the resource registered as its authoritative source
    source_item: str
    compared: int
    matched: int
    mismatched: int
    not_found: int
    mismatch_keys: tuple[str, ...] = ()
    unmeasured: str = ""


@dataclass(frozen=True)
class Basis:
    """What a check's record figures were counted from, so that the next check can start from
    them (an incremental check): the resource's data version and entry version when they were
    counted, the current records and per item those with a value, when they were last counted
    over every record, and how many records this check counted (-1: every record, a full
    count; 0: nothing had changed)."""

    data_version: int
    entry_version: int
    records: int
    filled: dict[str, int]
    full_at: dt.datetime
    recounted: int


@dataclass(frozen=True)
class QualityReport:
    resource_code: str
    provider_code: str
    entry_version: int
    checked_at: dt.datetime
    #: Start of the window submissions and share calls are counted in.
    window_start: dt.datetime
    records: int  # current records (not deleted)
    dimensions: tuple[DimensionScore, ...]
    overall: float | None
    grade: Grade | None
    level: Level
    thresholds: Thresholds
    #: Catalog metadata (GB/T 21063 fields filled), scored apart from the grade.
    metadata: Indicator
    items: tuple[ItemFigures, ...]
    #: 规范性 per rule: each item's rule checked on every submitted record (an absent optional
    #: value passes), summed over the items with that rule.
    rules: tuple[Indicator, ...]
    #: Share calls refused for the caller's own reasons (no grant, a bad request, a quota):
    #: shown, not held against the provider's 可访问性.
    caller_refusals: int
    #: Seconds since the newest aggregation; None when never aggregated.
    newest_data_age_seconds: int | None
    drops: tuple[Drop, ...] = field(default=())
    #: What the record figures were counted from (None in reports stored before it was kept).
    basis: Basis | None = None
    #: 一致性 per item sourced elsewhere (empty in reports stored before it was measured).
    consistency: tuple[ItemConsistency, ...] = ()

    def dimension(self, dimension: Dimension) -> DimensionScore:
        return next(d for d in self.dimensions if d.dimension is dimension)


def report_to_dict(report: QualityReport) -> dict[str, Any]:
    """The report as JSON-ready values (instants in ISO 8601)."""
    data = asdict(report)
    data["checked_at"] = report.checked_at.isoformat()
    data["window_start"] = report.window_start.isoformat()
    if report.basis is not None:
        data["basis"]["full_at"] = report.basis.full_at.isoformat()
    return data


def report_to_json(report: QualityReport) -> str:
    return json.dumps(
        report_to_dict(report), ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )


def _indicator(data: dict[str, Any]) -> Indicator:
    return Indicator(**(data | {"dimension": Dimension(data["dimension"])}))


def report_from_json(text: str) -> QualityReport:
    data = json.loads(text)
    return QualityReport(
        resource_code=data["resource_code"],
        provider_code=data["provider_code"],
        entry_version=data["entry_version"],
        checked_at=dt.datetime.fromisoformat(data["checked_at"]),
        window_start=dt.datetime.fromisoformat(data["window_start"]),
        records=data["records"],
        dimensions=tuple(
            DimensionScore(
                dimension=Dimension(d["dimension"]),
                score=d["score"],
                level=Level(d["level"]),
                indicators=tuple(_indicator(i) for i in d["indicators"]),
            )
            for d in data["dimensions"]
        ),
        overall=data["overall"],
        grade=Grade(data["grade"]) if data["grade"] else None,
        level=Level(data["level"]),
        thresholds=Thresholds(**data["thresholds"]),
        metadata=_indicator(data["metadata"]),
        items=tuple(ItemFigures(**i) for i in data["items"]),
        rules=tuple(_indicator(i) for i in data["rules"]),
        caller_refusals=data["caller_refusals"],
        newest_data_age_seconds=data["newest_data_age_seconds"],
        drops=tuple(Drop(**d) for d in data["drops"]),
        basis=_basis(data.get("basis")),
        consistency=tuple(
            ItemConsistency(**(c | {"mismatch_keys": tuple(c["mismatch_keys"])}))
            for c in data.get("consistency", ())
        ),
    )


def _basis(data: dict[str, Any] | None) -> Basis | None:
    if data is None:
        return None
    return Basis(**(data | {"full_at": dt.datetime.fromisoformat(data["full_at"])}))
