"""What a compliance report is made of (第八、四十二条): the kinds of finding, one figure per
kind with its numerator, denominator and audit sequence range, the findings behind them, and
the period a report covers. Pure: no database, no grpc."""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from node.errors import InvalidArgument
from node.times import CST

__all__ = [
    "MAX_FINDINGS_PER_KIND",
    "MAX_PERIOD_DAYS",
    "UNMEASURED",
    "Figure",
    "Finding",
    "Kind",
    "OverdueCorrections",
    "check_period",
    "figures_from_json",
    "figures_to_json",
    "findings_from_json",
    "findings_to_json",
    "parse_period",
]

#: The longest period one report covers: a year (an annual assessment), so that one report
#: reads a bounded part of the audit log.
MAX_PERIOD_DAYS = 366
#: Findings a stored report lists per kind; the figure's numerator counts every one.
MAX_FINDINGS_PER_KIND = 500


class Kind(enum.StrEnum):
    """One figure of a compliance report: the six items of 第四十二条 (一 to 六) and two the
    authority reads beside them. The value is what is stored and what the CLI takes."""

    OUT_OF_CATALOG = "out_of_catalog"  # 擅自扩大数据采集范围 (一, 第十二条)
    DUPLICATE = "duplicate"  # 重复采集数据 (二, 一数一源, 第十三条)
    LATE_AGGREGATION = "late_aggregation"  # 未在规定期限内汇聚数据 (三, 第二十一条)
    SHARED_DATA_MISUSE = "shared_data_misuse"  # 未按照规定使用共享数据 (四, 第三十七条)
    PROTECTED_DATA_MISUSE = "protected_data_misuse"  # 违规使用商业秘密、个人隐私 (五)
    UNAPPROVED_CHANGE = "unapproved_change"  # 擅自更改或者删除政务数据 (六, 第四十一条)
    OVERDUE_CORRECTIONS = "overdue_corrections"  # 纠错逾期 (第十六条)
    QUALITY = "quality"  # 数据质量等级 (第十五条)

    @property
    def term(self) -> str:
        """The Chinese label of the figure, as the report prints it."""
        return _TERMS[self]


_TERMS = {
    Kind.OUT_OF_CATALOG: "擅自扩大数据采集范围",
    Kind.DUPLICATE: "重复采集数据",
    Kind.LATE_AGGREGATION: "未在规定期限内汇聚数据",
    Kind.SHARED_DATA_MISUSE: "未按照规定使用共享数据",
    Kind.PROTECTED_DATA_MISUSE: "违规使用商业秘密、个人隐私数据",
    Kind.UNAPPROVED_CHANGE: "擅自更改或者删除政务数据",
    Kind.OVERDUE_CORRECTIONS: "纠错逾期未改",
    Kind.QUALITY: "数据质量等级",
}


@dataclass(frozen=True)
class Figure:
    """One figure: ``numerator`` findings out of ``denominator`` occasions, computed from the
    audit records ``first`` to ``last`` (0, 0: none read, or not from the audit log).

    ``noted`` counts what the figure shows without holding it against the agency (temporary
    collections with a reason and an expiry); ``value`` is the quality grade (A-E, "" when
    no resource of the agency was checked), and :data:`UNMEASURED` for overdue corrections
    on a node without the error report desk."""

    kind: Kind
    numerator: int
    denominator: int
    first: int = 0
    last: int = 0
    noted: int = 0
    value: str = ""

    @property
    def clean(self) -> bool:
        """Nothing held against the agency."""
        return self.numerator == 0


@dataclass(frozen=True)
class Finding:
    """One finding behind a numerator: the audit record that evidences it (0 for a missed
    aggregation), when, on which resource, and what happened."""

    kind: Kind
    sequence: int
    at: dt.datetime
    resource_code: str
    description: str
    request_id: str = ""


#: The value of the overdue corrections figure on a node built without the error report desk:
#: not counted (0/0 would read as "no error report").
UNMEASURED = "unmeasured"


#: ``(agency_code, start, end) -> (overdue, total)``: error reports (纠错, 第十六条) of the
#: agency's resources made in the period, and how many of them passed their deadline
#: unresolved. The error report desk supplies it; the node wires it (node.app).
class OverdueCorrections(Protocol):
    """Counts an agency's error reports (纠错) due in [start, end) as of ``now``, on the
    report's own connection: (overdue, total); ``open_only``: only those still open past their
    due time count as overdue (node.quality.count_overdue)."""

    def __call__(
        self,
        conn: AsyncConnection,
        provider_code: str,
        start: dt.datetime,
        end: dt.datetime,
        now: dt.datetime,
        *,
        open_only: bool = False,
    ) -> Awaitable[tuple[int, int]]: ...


# --- JSON as stored -------------------------------------------------------------------------


def figures_to_json(figures: list[Figure]) -> str:
    return json.dumps([asdict(f) for f in figures], ensure_ascii=False)


def figures_from_json(text: str) -> list[Figure]:
    return [Figure(**{**raw, "kind": Kind(raw["kind"])}) for raw in json.loads(text)]


def findings_to_json(findings: list[Finding]) -> str:
    return json.dumps(
        [
            [
                f.kind.value,
                f.sequence,
                f.at.isoformat(),
                f.resource_code,
                f.description,
                f.request_id,
            ]
            for f in findings
        ],
        ensure_ascii=False,
    )


def findings_from_json(text: str) -> list[Finding]:
    out: list[Finding] = []
    for kind, sequence, at, code, description, request_id in json.loads(text):
        out.append(
            Finding(
                Kind(kind), sequence, dt.datetime.fromisoformat(at), code, description, request_id
            )
        )
    return out


# --- periods --------------------------------------------------------------------------------

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")


def _day(text: str, what: str) -> dt.datetime:
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"period: {what} {text!r} is not a date (YYYY-MM-DD)") from None
    return dt.datetime.combine(day, dt.time(), CST).astimezone(dt.UTC)


def parse_period(text: str) -> tuple[dt.datetime, dt.datetime]:
    """``2026-11`` (a month) or ``2026-11-01..2026-12-01`` (from the first day, to the second,
    exclusive), in China Standard Time days; returned in UTC."""
    if len(text) > 30:
        raise InvalidArgument("period: YYYY-MM or YYYY-MM-DD..YYYY-MM-DD, got a longer text")
    month = _MONTH.match(text)
    if month:
        year, number = int(month.group(1)), int(month.group(2))
        if not 1 <= number <= 12:
            raise InvalidArgument(f"period: month {number} is not 01 to 12")
        start = _day(f"{year:04d}-{number:02d}-01", "month")
        following = (year + 1, 1) if number == 12 else (year, number + 1)
        return start, _day(f"{following[0]:04d}-{following[1]:02d}-01", "month")
    span = _RANGE.match(text)
    if span:
        return check_period(_day(span.group(1), "start"), _day(span.group(2), "end"))
    raise InvalidArgument(
        f"period: {text!r} is neither a month (2026-11) nor a range of days "
        "(2026-11-01..2026-12-01)"
    )


def check_period(start: dt.datetime, end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """``(start, end)`` when end follows start within :data:`MAX_PERIOD_DAYS`, else refused."""
    if end <= start:
        raise InvalidArgument("period: the end must be after the start")
    if end - start > dt.timedelta(days=MAX_PERIOD_DAYS):
        raise InvalidArgument(f"period: at most {MAX_PERIOD_DAYS} days in one report")
    return start, end
