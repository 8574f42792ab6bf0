"""Counting one agency's figures over a period from this node's own tables: the audit log for
what the agency did and what was refused (第三十九条), the catalog for its resources' update
cycles, the quality checks for its grade. Every read is bounded (pages of the audit log by
sequence, the period at most a year); the same inputs (the period, the audit head and the
moment of the report) count the same figures, which is what a recount relies on.

How each audit record counts (the README's "Supervision" section lists the same):

- ``SharingService/Submit``, one record per batch (detail ``batch_id``): an occasion of
  OUT_OF_CATALOG and UNAPPROVED_CHANGE; a finding of OUT_OF_CATALOG when records were refused
  for undeclared items (detail ``undeclared``), of UNAPPROVED_CHANGE when records were held
  for approval (detail ``held``, 第四十一条); a temporary collection is noted. A whole Submit
  refused (no ``batch_id``) is an occasion of OUT_OF_CATALOG, and a finding when it was refused
  for a temporary collection past its expiry.
- ``CatalogService/RegisterResource`` and ``UpdateResource``: an occasion of DUPLICATE; a
  finding when refused under 一数一源 (第十三条).
- Verify, Compare, Query, Exchange, Subscribe: an occasion of SHARED_DATA_MISUSE and
  PROTECTED_DATA_MISUSE. PERMISSION_DENIED for a level-4 item (detail ``protected_items``) and
  RESOURCE_EXHAUSTED by the Verify oracle are PROTECTED_DATA_MISUSE findings; any other
  PERMISSION_DENIED (暂不共享, no grant, outside a grant) and a suspected enumeration (detail
  ``enumeration_suspected``) SHARED_DATA_MISUSE findings.
- ``AccessService/RequestRecordChange``: an occasion of UNAPPROVED_CHANGE; a finding when
  PERMISSION_DENIED. ``ReviewChangeRequest`` rejecting a change of the agency (detail
  ``provider``, ``decision`` reject): an occasion and a finding; likewise the operator
  console's review (``console:/desks/changes/review``) and the CLI's (``cli:changes/reject``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel

import node.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from gateway.quote import clip_message
from node.catalog import ResourceEntry, ResourceStatus, entry_from_json
from node.quality import Grade, grade_of
from node.records import CYCLE_ALLOWANCE
from node.storage import IN_CHUNK, in_chunks
from node.supervision._types import (
    MAX_FINDINGS_PER_KIND,
    UNMEASURED,
    Figure,
    Finding,
    Kind,
    OverdueCorrections,
)
from node.times import CST

__all__ = ["DATA", "Counted", "count", "entries_of", "published", "window"]

AUDIT = SQLModel.metadata.tables["audit_record"]
CATALOG = SQLModel.metadata.tables["catalog_entry"]
QUALITY = SQLModel.metadata.tables["quality_check"]
DATA = SQLModel.metadata.tables["resource_data"]

_SERVICE = "/govnode.v1."
SUBMIT = f"{_SERVICE}SharingService/Submit"
_SHARE = frozenset(
    f"{_SERVICE}SharingService/{name}"
    for name in ("Verify", "Compare", "Query", "Exchange", "Subscribe")
)
_CATALOG_WRITES = frozenset(
    f"{_SERVICE}CatalogService/{name}" for name in ("RegisterResource", "UpdateResource")
)
_REQUEST_CHANGE = f"{_SERVICE}AccessService/RequestRecordChange"
REVIEW_CHANGE = f"{_SERVICE}AccessService/ReviewChangeRequest"
#: The same review at the operator console's change desk (node.console), audited with the
#: same detail (``provider``, ``decision``, ``change_request``).
CONSOLE_REVIEW_CHANGE = "console:/desks/changes/review"
#: And at the command line (``govnode changes approve|reject``, node.cli), with that detail too.
CLI_REVIEW_CHANGES = ("cli:changes/approve", "cli:changes/reject")
_REVIEWS = (REVIEW_CHANGE, CONSOLE_REVIEW_CHANGE, *CLI_REVIEW_CHANGES)
#: Audit records read per query.
_PAGE = 1000
#: Resources whose aggregation _late replays together (one IN (...) of their codes).
_CODES = IN_CHUNK
#: Characters of a refusal's message a finding quotes.
_QUOTED = 160
#: Grades below the pass line: a resource graded so counts against the agency.
_FAILING = frozenset({Grade.D.value, Grade.E.value})


@dataclass
class _Tally:
    kind: Kind
    numerator: int = 0
    denominator: int = 0
    first: int = 0
    last: int = 0
    noted: int = 0
    findings: list[Finding] = field(default_factory=list)

    def read(self, sequence: int) -> None:
        if sequence:
            self.first = min(self.first, sequence) if self.first else sequence
            self.last = max(self.last, sequence)

    def occasion(self, sequence: int) -> None:
        self.denominator += 1
        self.read(sequence)

    def find(self, finding: Finding) -> None:
        self.numerator += 1
        if len(self.findings) < MAX_FINDINGS_PER_KIND:
            self.findings.append(finding)

    def figure(self, value: str = "") -> Figure:
        return Figure(
            self.kind, self.numerator, self.denominator, self.first, self.last, self.noted, value
        )


@dataclass(frozen=True)
class Counted:
    """The figures, in :class:`Kind` order, and the findings behind them."""

    figures: list[Figure]
    findings: list[Finding]


def _int(detail: dict[str, Any], key: str) -> int:
    value = detail.get(key, 0)
    return value if isinstance(value, int) else 0


def _quoted(message: str) -> str:
    return clip_message(message[:_QUOTED] + ("…" if len(message) > _QUOTED else ""))


def classify(row: Any, agency_code: str) -> Iterator[tuple[Kind, str | None]]:
    """Each figure ``row`` (an audit record of the agency's calls, or a change review) is an
    occasion of, with the finding's description when it is also a finding (None otherwise)."""
    method, outcome, message = row.method, row.outcome, row.message
    detail = json.loads(row.detail) if row.detail else {}
    if method == SUBMIT:
        if "batch_id" in detail:
            undeclared, held = _int(detail, "undeclared"), _int(detail, "held")
            yield (
                Kind.OUT_OF_CATALOG,
                f"批次 {detail['batch_id']} 中 {undeclared} 条记录含采集目录外数据项，"
                "已拒收 (第十二条)"
                if undeclared
                else None,
            )
            yield (
                Kind.UNAPPROVED_CHANGE,
                f"批次 {detail['batch_id']} 试图未经批准更改 {held} 条已有记录，已转为待审批变更 "
                "(第四十一条)"
                if held
                else None,
            )
        elif outcome != "OK":
            expired = message.startswith("temporary.expires_at") and "has passed" in message
            yield (
                Kind.OUT_OF_CATALOG,
                f"临时采集已过期仍提交，已拒收: {_quoted(message)}" if expired else None,
            )
    elif method in _CATALOG_WRITES:
        duplicate = outcome == "FAILED_PRECONDITION" and "一数一源" in message
        yield (
            Kind.DUPLICATE,
            f"重复采集标准数据元，已拒绝: {_quoted(message)}" if duplicate else None,
        )
    elif method in _SHARE:
        protected = (outcome == "PERMISSION_DENIED" and _int(detail, "protected_items") > 0) or (
            outcome == "RESOURCE_EXHAUSTED" and "oracle protection" in message
        )
        misuse = not protected and outcome == "PERMISSION_DENIED"
        enumeration = _int(detail, "enumeration_suspected") > 0
        yield (
            Kind.SHARED_DATA_MISUSE,
            f"共享数据使用被拒绝: {_quoted(message)}"
            if misuse
            else "疑似枚举探测 (第三十七条)"
            if enumeration
            else None,
        )
        yield (
            Kind.PROTECTED_DATA_MISUSE,
            f"涉及个人隐私或商业秘密的数据请求被拒绝: {_quoted(message)}" if protected else None,
        )
    elif method == _REQUEST_CHANGE:
        denied = outcome == "PERMISSION_DENIED"
        yield (
            Kind.UNAPPROVED_CHANGE,
            f"无权更改或删除，已拒绝: {_quoted(message)}" if denied else None,
        )
    elif method in _REVIEWS and (
        outcome == "OK"
        and detail.get("provider") == agency_code
        and detail.get("decision") == "reject"
    ):
        yield (
            Kind.UNAPPROVED_CHANGE,
            f"变更申请 {detail.get('change_request', '')} 未获批准 (第四十一条)",
        )


# --- the reads ------------------------------------------------------------------------------


async def window(
    conn: AsyncConnection, start: dt.datetime, end: dt.datetime, head: int
) -> tuple[int, int]:
    """The first and last sequence of the audit records of the period (0, 0: none)."""
    row = (
        await conn.execute(
            sa.select(sa.func.min(AUDIT.c.sequence), sa.func.max(AUDIT.c.sequence)).where(
                AUDIT.c.at >= start, AUDIT.c.at < end, AUDIT.c.sequence <= head
            )
        )
    ).one()
    return (row[0] or 0, row[1] or 0)


async def _scan(
    conn: AsyncConnection,
    first: int,
    last: int,
    start: dt.datetime,
    end: dt.datetime,
    where: Any,
) -> AsyncIterator[Any]:
    """The records first..last of the period matching ``where``, read a page at a time (one
    page in memory, whatever the period holds)."""
    if not first:
        return
    after = first - 1
    while after < last:
        page = list(
            await conn.execute(
                sa.select(AUDIT)
                .where(
                    AUDIT.c.sequence > after,
                    AUDIT.c.sequence <= last,
                    AUDIT.c.at >= start,
                    AUDIT.c.at < end,
                    where,
                )
                .order_by(AUDIT.c.sequence)
                .limit(_PAGE)
            )
        )
        for row in page:
            yield row
        if len(page) < _PAGE:
            return
        after = page[-1].sequence


async def entries_of(conn: AsyncConnection, agency_code: str, region: str) -> list[ResourceEntry]:
    """The agency's resources in this node's catalog."""
    rows = await conn.execute(
        sa.select(CATALOG.c.body).where(
            CATALOG.c.provider_code == agency_code, CATALOG.c.region == region
        )
    )
    return [entry_from_json(row.body) for row in rows]


def _aggregated(row: Any) -> bool:
    detail = json.loads(row.detail) if row.detail else {}
    return "batch_id" in detail and (_int(detail, "accepted") + _int(detail, "held")) > 0


def _submitted() -> Any:
    return sa.and_(AUDIT.c.method == SUBMIT, AUDIT.c.outcome == "OK")


def _submits_of(code: str) -> Any:
    return sa.and_(_submitted(), AUDIT.c.resource_code == code)


async def _before(conn: AsyncConnection, code: str, first: int, start: dt.datetime) -> Any:
    """The last aggregation of ``code`` before the period, or None."""
    before = first if first else None
    while True:
        statement = sa.select(AUDIT).where(_submits_of(code), AUDIT.c.at < start)
        if before is not None:
            statement = statement.where(AUDIT.c.sequence < before)
        page = list(await conn.execute(statement.order_by(AUDIT.c.sequence.desc()).limit(_PAGE)))
        for row in page:
            if _aggregated(row):
                return row
        if len(page) < _PAGE:
            return None
        before = page[-1].sequence


def published(entry: ResourceEntry) -> dt.datetime | None:
    try:
        day = dt.date.fromisoformat(entry.publish_date)
    except ValueError:
        return None
    return dt.datetime.combine(day, dt.time(), CST).astimezone(dt.UTC)


def _cst(moment: dt.datetime) -> str:
    return moment.astimezone(CST).strftime("%Y-%m-%d %H:%M")


@dataclass
class _Cycle:
    """One resource's aggregation as _late replays it: the last aggregation so far (or its
    publish date) and the first moment it went past its cycle's allowance."""

    entry: ResourceEntry
    allowance: dt.timedelta
    since: dt.datetime | None
    late: Finding | None = None

    def aggregated(self, row: Any) -> None:
        if self.late is None and self.since is not None and row.at - self.since > self.allowance:
            due = self.since + self.allowance
            self.late = Finding(
                Kind.LATE_AGGREGATION,
                row.sequence,
                due,
                self.entry.resource_code,
                f"应于 {_cst(due)} 前汇聚，实际 {_cst(row.at)} 汇聚 (第二十一条)",
                row.request_id,
            )
        self.since = row.at

    def finish(self, until: dt.datetime) -> Finding | None:
        if self.late is None and self.since is not None and until - self.since > self.allowance:
            due = self.since + self.allowance
            self.late = Finding(
                Kind.LATE_AGGREGATION,
                0,
                due,
                self.entry.resource_code,
                f"应于 {_cst(due)} 前汇聚，至 {_cst(until)} 仍未汇聚 (第二十一条)",
            )
        return self.late


async def _lasts_before(
    conn: AsyncConnection, codes: Sequence[str], first: int, start: dt.datetime
) -> dict[str, Any]:
    """For each of ``codes`` that has one, its last aggregation before the period: the last
    Submit of each read in one query, and _before for a code whose last aggregated nothing."""
    statement = (
        sa.select(AUDIT.c.resource_code, sa.func.max(AUDIT.c.sequence))
        .where(AUDIT.c.resource_code.in_(codes), _submitted(), AUDIT.c.at < start)
        .group_by(AUDIT.c.resource_code)
    )
    if first:
        statement = statement.where(AUDIT.c.sequence < first)
    lasts = {code: sequence for code, sequence in await conn.execute(statement)}
    found: dict[str, Any] = {}
    if lasts:
        rows = await conn.execute(sa.select(AUDIT).where(AUDIT.c.sequence.in_(lasts.values())))
        found = {row.resource_code: row for row in rows}
    previous: dict[str, Any] = {}
    for code in sorted(lasts):
        row = found.get(code)
        if row is not None and _aggregated(row):
            previous[code] = row
        else:  # rejected whole, or held nothing: page back from it
            older = await _before(conn, code, lasts[code], start)
            if older is not None:
                previous[code] = older
    return previous


async def _late(
    conn: AsyncConnection,
    entries: Sequence[ResourceEntry],
    first: int,
    last: int,
    start: dt.datetime,
    end: dt.datetime,
    until: dt.datetime,
) -> _Tally:
    """Resources of a fixed update cycle that went longer than the cycle's allowance without an
    aggregation at some moment of the period (up to ``until``, the report's moment): 第二十一条
    as node.records' aggregation status reads it, replayed from the audit log.

    The resources are taken _CODES at a time: their last aggregations before the period in two
    queries, then the period's Submits of all of them in one scan, so a province of 100,000
    resources makes a few hundred queries, not two per resource."""
    tally = _Tally(Kind.LATE_AGGREGATION)
    due = []
    for entry in sorted(entries, key=lambda e: e.resource_code):
        allowance = CYCLE_ALLOWANCE[entry.update_cycle]
        if allowance is not None and entry.status is ResourceStatus.ACTIVE:
            due.append((entry, allowance))
    for page in in_chunks(due, _CODES):
        codes = [entry.resource_code for entry, _ in page]
        previous = await _lasts_before(conn, codes, first, start)
        cycles: dict[str, _Cycle] = {}
        for entry, allowance in page:
            tally.denominator += 1
            before = previous.get(entry.resource_code)
            since = published(entry) if before is None else before.at
            if before is not None:
                tally.read(before.sequence)
            cycles[entry.resource_code] = _Cycle(entry, allowance, since)
        scanned = sa.and_(AUDIT.c.resource_code.in_(codes), _submitted())
        async for row in _scan(conn, first, last, start, end, scanned):
            if _aggregated(row):
                tally.read(row.sequence)
                cycles[row.resource_code].aggregated(row)
        for code in codes:
            late = cycles[code].finish(until)
            if late is not None:
                tally.find(late)
    return tally


async def _quality(
    conn: AsyncConnection, entries: Sequence[ResourceEntry], moment: dt.datetime
) -> Figure:
    """Resources graded below the pass line (D, E) out of those checked, by their newest check
    up to ``moment``; the value is the grade of their mean overall score."""
    codes = [e.resource_code for e in entries]
    newest: dict[str, Any] = {}
    for chunk in in_chunks(codes):
        rows = await conn.execute(
            sa.select(QUALITY.c.resource_code, QUALITY.c.overall, QUALITY.c.grade)
            .where(
                QUALITY.c.resource_code.in_(chunk),
                QUALITY.c.checked_at <= moment,
            )
            .order_by(QUALITY.c.checked_at, QUALITY.c.id)
        )
        for row in rows:
            newest[row.resource_code] = row
    failing = sum(1 for row in newest.values() if row.grade in _FAILING)
    scores = [row.overall for row in newest.values() if row.overall is not None]
    grade = grade_of(sum(scores) / len(scores)).value if scores else ""
    return Figure(Kind.QUALITY, failing, len(newest), value=grade)


async def count(
    conn: AsyncConnection,
    *,
    agency_code: str,
    agency_uri: str,
    region: str,
    start: dt.datetime,
    end: dt.datetime,
    first: int,
    last: int,
    moment: dt.datetime,
    overdue_corrections: OverdueCorrections | None,
) -> Counted:
    """The agency's figures over the audit records ``first``..``last`` of the period, as of
    ``moment`` (when the report was made)."""
    tallies = {kind: _Tally(kind) for kind in Kind}
    mine = sa.or_(AUDIT.c.caller == agency_uri, AUDIT.c.method.in_(_REVIEWS))
    async for row in _scan(conn, first, last, start, end, mine):
        for kind, found in classify(row, agency_code):
            tally = tallies[kind]
            tally.occasion(row.sequence)
            if found is not None:
                tally.find(
                    Finding(kind, row.sequence, row.at, row.resource_code, found, row.request_id)
                )
            elif kind is Kind.OUT_OF_CATALOG and json.loads(row.detail or "{}").get("temporary"):
                tally.noted += 1
    entries = await entries_of(conn, agency_code, region)
    tallies[Kind.LATE_AGGREGATION] = await _late(
        conn, entries, first, last, start, end, min(end, moment)
    )
    figures = [
        tallies[kind].figure()
        for kind in Kind
        if kind not in (Kind.OVERDUE_CORRECTIONS, Kind.QUALITY)
    ]
    if overdue_corrections is None:
        figures.append(Figure(Kind.OVERDUE_CORRECTIONS, 0, 0, value=UNMEASURED))
    else:
        overdue, total = await overdue_corrections(conn, agency_code, start, end, moment)
        figures.append(Figure(Kind.OVERDUE_CORRECTIONS, overdue, total))
    figures.append(await _quality(conn, entries, moment))
    findings = [f for kind in Kind for f in tallies[kind].findings]
    return Counted(figures, findings)
