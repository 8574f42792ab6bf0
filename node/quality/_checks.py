"""Quality checks of the resources this node owns (全程监控、定期检查, 第十五条; 准确性、时效性、
完整性和可用性, 第十六条): count (node.quality._measure), score, grade, compare with the
resource's recent history, and keep the result.

Scores: an indicator scores 100 × numerator / denominator; a dimension, the mean of its
measured indicators (an indicator with nothing to count, denominator 0, is left out); the
overall score, the mean of the measured dimensions, equally weighted (GB/T 36344 gives no
weights, and any would be a local choice to argue about). The grade is the overall score's band
(node.quality._types.GRADE_BANDS).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from statistics import fmean

import sqlalchemy as sa
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Identity, Role, authority_identity
from gateway.quote import quote
from node.audit import AuditEntry, AuditLog, Operation, request_digest
from node.catalog import Catalog, ResourceEntry, ValidationKind
from node.codes import Region
from node.errors import FailedPrecondition, NotFound, PermissionDenied
from node.models import QualityCheckRow
from node.quality._consistency import SourceCompare, measure_consistency
from node.quality._measure import Figures, measure
from node.quality._metadata import metadata_indicator
from node.quality._types import (
    Dimension,
    DimensionScore,
    Drop,
    Indicator,
    ItemConsistency,
    ItemFigures,
    QualityReport,
    Thresholds,
    grade_of,
    report_from_json,
    report_to_json,
)
from node.records import CYCLE_ALLOWANCE, Records
from node.storage import Database
from node.times import CST

__all__ = [
    "CHECK_METHOD",
    "PROVIDER_FAULTS",
    "Quality",
    "QualitySettings",
    "build_report",
    "check_reader",
    "drops_of",
]

#: Outcomes of a share call that are the provider's node failing, not the caller being
#: refused: 可访问性 counts them against the resource.
PROVIDER_FAULTS = frozenset(
    {"UNAVAILABLE", "INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED", "DATA_LOSS"}
)
CHECK = SQLModel.metadata.tables["quality_check"]
#: How the audit log names a quality check (by the daily schedule or `govnode quality check`).
CHECK_METHOD = "quality.check"

#: Checks a history read returns at most (a year of daily checks).
MAX_HISTORY = 366


@dataclass(frozen=True)
class HistoryPoint:
    """One stored check of a resource, for its history: when, its CST day, the overall score
    (None: nothing measurable) and the grade ("" then)."""

    checked_at: dt.datetime
    day: str
    overall: float | None
    grade: str


def _utc(moment: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes through a Core select; they are stored in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class QualitySettings:
    """``[quality]`` of the node's configuration, as the checks need it."""

    window_days: int = 30
    thresholds: Thresholds = field(default_factory=Thresholds)
    per_resource: Mapping[str, Thresholds] = field(default_factory=dict)
    drop_points: float = 10.0
    history_checks: int = 7
    #: Records are counted over every record at least this often; in between, a check counts
    #: only what changed since the previous one (node.quality._measure).
    full_count_days: int = 7
    #: 一致性: records sampled per item sourced by another resource (node.quality._consistency).
    consistency_sample: int = 200

    def thresholds_of(self, code: str) -> Thresholds:
        return self.per_resource.get(code, self.thresholds)


def check_reader(caller: Identity, entry: ResourceEntry, trust_domain: str) -> None:
    """A resource's quality report is read by its provider, the data management authority of
    its region and the province's authority (第十五条); anyone else is refused."""
    region = entry.region
    province = Region(region).province_code
    allowed = {authority_identity(region, trust_domain), authority_identity(province, trust_domain)}
    if caller.uri in allowed:
        return
    if (
        caller.role is Role.AGENCY
        and caller.subject == entry.provider_code
        and caller.region == region
    ):
        return
    raise PermissionDenied(
        f"the quality report of resource {entry.resource_code} is read by its provider (agency "
        f"{entry.provider_code} of region {region}), the data management authority of region "
        f"{region} and the province's authority (第十五条); {caller.uri} is none of them"
    )


def _mean(values: list[float | None]) -> float | None:
    measured = [v for v in values if v is not None]
    return round(fmean(measured), 2) if measured else None


def _dimension(
    dimension: Dimension, thresholds: Thresholds, *indicators: Indicator
) -> DimensionScore:
    score = _mean([i.score for i in indicators])
    return DimensionScore(dimension, score, thresholds.level(score), tuple(indicators))


def _rule_of(entry: ResourceEntry, name: str) -> str:
    item = next(i for i in entry.items if i.name == name)
    kind = item.validation.kind
    return f"type {item.data_type.value}" if kind is ValidationKind.NONE else kind.value


def build_report(
    entry: ResourceEntry,
    figures: Figures,
    *,
    now: dt.datetime,
    window_start: dt.datetime,
    thresholds: Thresholds,
    consistency: tuple[ItemConsistency, ...] = (),
) -> QualityReport:
    """Score ``figures`` and the 一致性 samples (no history yet: see :meth:`Quality.check`)."""
    records = figures.records
    submitted = figures.submitted
    names = [item.name for item in entry.items]
    required = [item.name for item in entry.items if item.required or item.key]

    # 规范性: records whose every value passed its item's rule, and per rule.
    conformity = Indicator(
        "010400",
        Dimension.CONFORMITY,
        "业务规则",
        figures.passed,
        submitted,
        "records accepted by every item's rule / records submitted, in batches applied in the "
        "window",
    )
    by_rule: dict[str, list[str]] = {}
    for name in names:
        by_rule.setdefault(_rule_of(entry, name), []).append(name)
    rules = tuple(
        Indicator(
            f"010400:{rule}",
            Dimension.CONFORMITY,
            "业务规则",
            sum(submitted - figures.refused_by_item.get(n, 0) for n in items),
            submitted * len(items),
            f"checks of items with rule {rule} ({', '.join(items[:5])}"
            + (f" and {len(items) - 5} more" if len(items) > 5 else "")
            + ") passed / records submitted × those items",
        )
        for rule, items in sorted(by_rule.items())
    )

    # 完整性: items filled in the current records.
    completeness = (
        Indicator(
            "020100",
            Dimension.COMPLETENESS,
            "数据元素完整性",
            sum(figures.filled.get(n, 0) for n in required),
            records * len(required),
            "values of required and key items present / current records × those items",
        ),
        Indicator(
            "020101",
            Dimension.COMPLETENESS,
            "数据元素完整性",
            sum(figures.filled.get(n, 0) for n in names),
            records * len(names),
            "values of declared items present / current records × declared items",
        ),
    )

    # 唯一性: keys carried twice with other values in a batch; batches sent again.
    uniqueness = (
        Indicator(
            "030400",
            Dimension.UNIQUENESS,
            "数据唯一性",
            submitted - figures.key_conflicts,
            submitted,
            "records not refused for a key carried with other values in the same batch / "
            "records submitted (stored records are unique by key: the key is the primary key)",
        ),
        Indicator(
            "030300",
            Dimension.UNIQUENESS,
            "数据重复率",
            figures.batches,
            figures.batches + figures.resent,
            "batches applied / batches applied + batches resent with the same content "
            "(1 − resent share)",
        ),
    )

    # 一致性: sampled values found at their authoritative source and equal to it.
    measured = [c for c in consistency if not c.unmeasured]
    agreeing = Indicator(
        "040100",
        Dimension.CONSISTENCY,
        "相同数据一致性",
        sum(c.matched for c in measured),
        sum(c.matched + c.mismatched for c in measured),
        "sampled values equal to their authoritative source's (一数一源) / sampled records "
        "found at the source, over the items whose standard data element another resource "
        "sources; keys the source lacks are shown apart",
    )

    # 时效性: periods of the update cycle with an aggregation; the newest data's age.
    allowance = CYCLE_ALLOWANCE[entry.update_cycle]
    last = figures.last_aggregated_at
    age = None if last is None else max(0, int((now - last).total_seconds()))
    current = 0
    if allowance is not None and last is not None and now - last <= allowance:
        current = 1
    timeliness = (
        Indicator(
            "050100",
            Dimension.TIMELINESS,
            "基于时间段的正确性",
            figures.periods_aggregated,
            figures.periods,
            "update-cycle periods (the cycle with its day of grace) in the window with an "
            "aggregation / periods in the window since registration",
        ),
        Indicator(
            "050200",
            Dimension.TIMELINESS,
            "基于时间点的及时性",
            current,
            0 if allowance is None or figures.periods == 0 else 1,
            "1 when the newest aggregation is within the update cycle's allowance, else 0",
        ),
    )

    # 可访问性: share calls served, against the provider's node failing them.
    served = figures.calls.get("OK", 0)
    faults = sum(n for outcome, n in figures.calls.items() if outcome in PROVIDER_FAULTS)
    refusals = sum(figures.calls.values()) - served - faults
    accessibility = Indicator(
        "060100",
        Dimension.ACCESSIBILITY,
        "可访问",
        served,
        served + faults,
        "Verify, Compare, Query and Exchange calls served / calls served + calls the node "
        "failed (UNAVAILABLE, INTERNAL, UNKNOWN, DEADLINE_EXCEEDED, DATA_LOSS); callers' "
        "refusals are not counted",
    )

    dimensions = (
        _dimension(Dimension.CONFORMITY, thresholds, conformity),
        _dimension(Dimension.COMPLETENESS, thresholds, *completeness),
        _dimension(Dimension.UNIQUENESS, thresholds, *uniqueness),
        _dimension(Dimension.CONSISTENCY, thresholds, agreeing),
        _dimension(Dimension.TIMELINESS, thresholds, *timeliness),
        _dimension(Dimension.ACCESSIBILITY, thresholds, accessibility),
    )
    overall = _mean([d.score for d in dimensions])
    return QualityReport(
        resource_code=entry.resource_code,
        provider_code=entry.provider_code,
        entry_version=entry.version,
        checked_at=now,
        window_start=window_start,
        records=records,
        dimensions=dimensions,
        overall=overall,
        grade=None if overall is None else grade_of(overall),
        level=thresholds.level(overall),
        thresholds=thresholds,
        metadata=metadata_indicator(entry),
        items=tuple(
            ItemFigures(
                item=item.name,
                rule=_rule_of(entry, item.name),
                required=item.required or item.key,
                filled=figures.filled.get(item.name, 0),
                missing=records - figures.filled.get(item.name, 0),
                refused=figures.refused_by_item.get(item.name, 0),
            )
            for item in entry.items
        ),
        rules=rules,
        caller_refusals=refusals,
        newest_data_age_seconds=age,
        basis=figures.basis,
        consistency=consistency,
    )


def drops_of(
    report: QualityReport, previous: list[dict[str, float | None]], points: float
) -> tuple[Drop, ...]:
    """Scores more than ``points`` below the mean of the same score in ``previous`` checks."""
    current: dict[str, float | None] = {"overall": report.overall}
    current.update((d.dimension.value, d.score) for d in report.dimensions)
    drops = []
    for name, score in current.items():
        if score is None:
            continue
        before = [p[name] for p in previous if p.get(name) is not None]
        if not before:
            continue
        baseline = round(fmean(v for v in before if v is not None), 2)
        if baseline - score > points:
            drops.append(Drop(name, score, baseline, len(before)))
    return tuple(drops)


def _scores(report: QualityReport) -> dict[str, float | None]:
    scores: dict[str, float | None] = {"overall": report.overall}
    scores.update((d.dimension.value, d.score) for d in report.dimensions)
    return scores


Progress = Callable[[int, int, str], None]


class Quality:
    """The quality checks of this node's resources and their history."""

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        *,
        node_region: str,
        settings: QualitySettings,
        clock: Callable[[], dt.datetime] | None = None,
        audit: AuditLog | None = None,
        source_compare: SourceCompare | None = None,
    ) -> None:
        """``audit``: where checks are recorded (第三十九条: 分析), one record per resource
        checked, with its overall score and grade; None records nothing.
        ``source_compare``: compares a 一致性 sample against a source held by another node
        (the node routes it, node.federation.Router.quality_compare); None leaves those items
        unmeasured."""
        self._db = db
        self._records = Records(db, node_region)
        self._source_compare = source_compare
        self._audit = audit
        self._catalog = catalog
        self._region = node_region
        self._settings = settings
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    async def entry(self, code: str) -> ResourceEntry:
        """The entry of a resource this node owns (its records, and so its quality, are
        here); NotFound or FailedPrecondition otherwise."""
        entry = await self._catalog.current(code)
        if entry.region != self._region:
            raise FailedPrecondition(
                f"resource {code} belongs to region {entry.region}: its records and their "
                f"quality are at that region's node, not at {self._region}"
            )
        return entry

    async def check(self, code: str, by: str) -> QualityReport:
        """Measure one resource now, flag drops against its history, and keep the result."""
        entry = await self.entry(code)
        settings = self._settings
        now = self._clock().astimezone(dt.UTC)
        window_start = now - dt.timedelta(days=settings.window_days)
        previous = await self._latest_text(code)
        figures = await measure(
            self._db,
            entry,
            now=now,
            window_start=window_start,
            period=CYCLE_ALLOWANCE[entry.update_cycle],
            registered_at=entry.created_at,
            basis=None if previous is None else report_from_json(previous).basis,
            full_after=dt.timedelta(days=settings.full_count_days),
        )
        consistency = await measure_consistency(
            self._db,
            self._catalog,
            self._records,
            entry,
            node_region=self._region,
            sample=settings.consistency_sample,
            day=now.astimezone(CST).date().isoformat(),
            remote=self._source_compare,
        )
        report = build_report(
            entry,
            figures,
            now=now,
            window_start=window_start,
            thresholds=settings.thresholds_of(code),
            consistency=consistency,
        )
        scores = _scores(report)

        async def txn(session: AsyncSession) -> QualityReport:
            conn = await session.connection()
            rows = await conn.execute(
                sa.select(CHECK.c.scores)
                .where(CHECK.c.resource_code == code)
                .order_by(CHECK.c.checked_at.desc(), CHECK.c.id.desc())
                .limit(settings.history_checks)
            )
            previous = [json.loads(row[0]) for row in rows]
            done = dataclasses.replace(
                report, drops=drops_of(report, previous, settings.drop_points)
            )
            session.add(
                QualityCheckRow(
                    resource_code=code,
                    checked_at=now,
                    day=now.astimezone(CST).date().isoformat(),
                    entry_version=entry.version,
                    overall=report.overall,
                    grade=report.grade.value if report.grade else "",
                    scores=json.dumps(scores, sort_keys=True),
                    report=report_to_json(done),
                    checked_by=by,
                )
            )
            return done

        done = await self._db.write("quality.check", txn)
        if self._audit is not None:
            await self._audit.append(
                AuditEntry(
                    caller=by,
                    method=CHECK_METHOD,
                    operation=Operation.ANALYZE,
                    outcome="OK",
                    request_digest=request_digest(f"{CHECK_METHOD} {code}".encode()),
                    resource_code=code,
                    message=f"grade {done.grade.value if done.grade else '-'}",
                    detail={
                        "overall": "" if done.overall is None else f"{done.overall:.2f}",
                        "drops": len(done.drops),
                    },
                )
            )
        return done

    async def resources(self) -> list[str]:
        """The codes of the resources this node owns and checks (withdrawn ones left out)."""
        codes: list[str] = []
        token = ""
        while True:
            page, token = await self._catalog.list(
                region=self._region, page_size=500, page_token=token
            )
            codes.extend(e.resource_code for e in page if not e.probe)
            if not token:
                return codes

    async def check_all(
        self,
        by: str,
        progress: Progress | None = None,
        *,
        unless_checked_since: dt.datetime | None = None,
    ) -> list[QualityReport]:
        """Check every resource this node owns, one after the other (one transaction each).
        ``unless_checked_since``: leave out the resources checked at or after it, so that when
        several processes of one node (on PostgreSQL, behind one load balancer) each run the
        daily check, a resource another one checked already is not checked again."""
        codes = await self.resources()
        if unless_checked_since is not None:
            done = await self._checked_since(unless_checked_since)
            codes = [code for code in codes if code not in done]
        reports = []
        for n, code in enumerate(codes, 1):
            reports.append(await self.check(code, by))
            if progress is not None:
                progress(n, len(codes), code)
        return reports

    async def _checked_since(self, since: dt.datetime) -> set[str]:
        async def txn(session: AsyncSession) -> set[str]:
            conn = await session.connection()
            rows = await conn.execute(
                sa.select(CHECK.c.resource_code).distinct().where(CHECK.c.checked_at >= since)
            )
            return {str(row[0]) for row in rows}

        return await self._db.read("quality.checked_since", txn)

    async def latest(self, code: str) -> QualityReport:
        """The newest stored check of ``code``; NotFound when it was never checked."""
        text = await self._latest_text(code)
        if text is None:
            raise NotFound(
                f"resource {quote(code)} has no quality check yet: checks run daily at "
                "[quality] check_time, or now with `govnode quality check --resource CODE`"
            )
        return report_from_json(text)

    async def history(self, code: str, limit: int = 60) -> list[HistoryPoint]:
        """The newest ``limit`` checks of ``code`` (at most :data:`MAX_HISTORY`), oldest
        first: what a chart of the resource's quality over time draws (the operator console)."""
        limit = max(1, min(limit, MAX_HISTORY))

        async def txn(session: AsyncSession) -> list[HistoryPoint]:
            conn = await session.connection()
            rows = await conn.execute(
                sa.select(CHECK.c.checked_at, CHECK.c.day, CHECK.c.overall, CHECK.c.grade)
                .where(CHECK.c.resource_code == code)
                .order_by(CHECK.c.checked_at.desc(), CHECK.c.id.desc())
                .limit(limit)
            )
            return [
                HistoryPoint(
                    checked_at=_utc(row[0]),
                    day=str(row[1]),
                    overall=None if row[2] is None else float(row[2]),
                    grade=str(row[3]),
                )
                for row in rows
            ][::-1]

        return await self._db.read("quality.history", txn)

    async def _latest_text(self, code: str) -> str | None:
        async def txn(session: AsyncSession) -> str | None:
            conn = await session.connection()
            row = (
                await conn.execute(
                    sa.select(CHECK.c.report)
                    .where(CHECK.c.resource_code == code)
                    .order_by(CHECK.c.checked_at.desc(), CHECK.c.id.desc())
                    .limit(1)
                )
            ).first()
            return None if row is None else str(row[0])

        return await self._db.read("quality.latest", txn)
