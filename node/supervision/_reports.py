"""Compliance reports (监督检查, 第八、四十二条): made for one agency and a period, stored when
made with the audit head they were computed at, read back by page, and recounted from the
audit log after the chain over their range has been verified."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Identity, Role, authority_identity, provider_identity
from gateway.quote import quote
from node import paging
from node.audit import AuditEntry, AuditLog, ChainCheck, Operation, request_digest
from node.codes import Region, credit_code_problem
from node.errors import InvalidArgument, NotFound, PermissionDenied
from node.models import CatalogEntryRow, ComplianceReportRow
from node.storage import Database
from node.supervision._count import count, window
from node.supervision._types import (
    Figure,
    Finding,
    Kind,
    OverdueCorrections,
    check_period,
    figures_from_json,
    figures_to_json,
    findings_from_json,
    findings_to_json,
)

__all__ = [
    "REPORT_METHOD",
    "ComplianceReport",
    "Recount",
    "Supervision",
    "check_agency_code",
    "check_report_reader",
]

#: The audit record's method for a report made by the CLI (an RPC is audited as itself).
REPORT_METHOD = "supervision.report"
#: Findings per page: default and most.
DEFAULT_PAGE = 100
MAX_PAGE = 500


#: Agencies :meth:`Supervision.agencies` reads at most.
MAX_AGENCIES = 5000


@dataclass(frozen=True)
class ComplianceReport:
    """A stored compliance report (see node.models.ComplianceReportRow)."""

    id: str
    agency_code: str
    period_start: dt.datetime
    period_end: dt.datetime
    generated_at: dt.datetime
    generated_by: str
    head_size: int
    head_hash: str
    window_first: int
    window_last: int
    figures: list[Figure]
    findings: list[Finding]

    def figure(self, kind: Kind) -> Figure:
        return next(f for f in self.figures if f.kind is kind)


@dataclass(frozen=True)
class Recount:
    """A stored report counted again: the chain check over its range, and the figures that
    came out different (stored, recounted); empty when every figure matches."""

    report: ComplianceReport
    chain: ChainCheck
    first: int
    last: int
    differences: list[tuple[Figure, Figure]]

    @property
    def matches(self) -> bool:
        return self.chain.ok and not self.differences


def check_agency_code(code: str) -> str:
    """``code`` when it is a valid 统一社会信用代码, else refused naming the field."""
    if not code:
        raise InvalidArgument("agency_code is required (the agency's 统一社会信用代码)")
    problem = credit_code_problem(code)
    if problem is not None:
        raise InvalidArgument(f"agency_code: {quote(code)} {problem} (GB 32100)")
    return code


def check_report_reader(
    caller: Identity, agency_code: str, node_region: str, trust_domain: str
) -> None:
    """An agency's compliance report is read by the agency itself, this node's data management
    authority and the province's authority (第八条); anyone else is refused."""
    province = Region(node_region).province_code
    allowed = {
        authority_identity(node_region, trust_domain),
        authority_identity(province, trust_domain),
    }
    if caller.uri in allowed:
        return
    if (
        caller.role is Role.AGENCY
        and caller.subject == agency_code
        and caller.region == node_region
    ):
        return
    raise PermissionDenied(
        f"the compliance report of agency {agency_code} is read by the agency itself, the data "
        f"management authority of region {node_region} and the province's authority (第八条); "
        f"{caller.uri} is none of them"
    )


def _row_report(row: ComplianceReportRow) -> ComplianceReport:
    return ComplianceReport(
        id=row.id,
        agency_code=row.agency_code,
        period_start=row.period_start,
        period_end=row.period_end,
        generated_at=row.generated_at,
        generated_by=row.generated_by,
        head_size=row.head_size,
        head_hash=row.head_hash,
        window_first=row.window_first,
        window_last=row.window_last,
        figures=figures_from_json(row.figures),
        findings=findings_from_json(row.findings),
    )


class Supervision:
    """Compliance reports of this node's agencies. ``overdue_corrections`` counts an agency's
    overdue error reports (纠错): the node wires the error report desk's count (node.app);
    None: the figure is reported :data:`UNMEASURED`."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        *,
        node_region: str,
        trust_domain: str,
        overdue_corrections: OverdueCorrections | None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._db = db
        self._audit = audit
        self._region = node_region
        self._trust_domain = trust_domain
        self._overdue = overdue_corrections
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    @property
    def db(self) -> Database:
        return self._db

    @property
    def overdue_corrections(self) -> OverdueCorrections | None:
        return self._overdue

    @property
    def region(self) -> str:
        return self._region

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    @property
    def audit(self) -> AuditLog:
        return self._audit

    def now(self) -> dt.datetime:
        return self._clock()

    def agency_uri(self, agency_code: str) -> str:
        return provider_identity(self._region, self._trust_domain, agency_code)

    async def generate(
        self,
        agency_code: str,
        start: dt.datetime,
        end: dt.datetime,
        by: str,
        *,
        audit_it: bool = False,
    ) -> ComplianceReport:
        """Count the agency's figures over the period now and store the report. ``audit_it``:
        write an audit record for it (the CLI; an RPC is audited by the guard)."""
        check_agency_code(agency_code)
        start, end = check_period(start, end)
        moment = self._clock()
        head_size, head_hash = await self._audit.head()

        async def txn(session: AsyncSession) -> ComplianceReport:
            conn = await session.connection()
            first, last = await window(conn, start, end, head_size)
            counted = await count(
                conn,
                agency_code=agency_code,
                agency_uri=self.agency_uri(agency_code),
                region=self._region,
                start=start,
                end=end,
                first=first,
                last=last,
                moment=moment,
                overdue_corrections=self._overdue,
            )
            row = ComplianceReportRow(
                id=f"{self._region}-R-{os.urandom(8).hex()}",
                agency_code=agency_code,
                period_start=start,
                period_end=end,
                generated_at=moment,
                generated_by=by,
                head_size=head_size,
                head_hash=head_hash,
                window_first=first,
                window_last=last,
                figures=figures_to_json(counted.figures),
                findings=findings_to_json(counted.findings),
            )
            session.add(row)
            return _row_report(row)

        report = await self._db.write("supervision.generate", txn)
        if audit_it:
            await self._audit.append(
                AuditEntry(
                    caller=by,
                    method=REPORT_METHOD,
                    operation=Operation.ANALYZE,
                    outcome="OK",
                    request_digest=request_digest(f"{REPORT_METHOD} {report.id}".encode()),
                    detail={"report": report.id, "agency": agency_code},
                )
            )
        return report

    async def get(self, report_id: str) -> ComplianceReport:
        if not report_id:
            raise InvalidArgument("report_id is required")
        if len(report_id) > 64:
            raise NotFound(f"compliance report {quote(report_id)} does not exist on this node")

        async def txn(session: AsyncSession) -> ComplianceReportRow | None:
            return await session.get(ComplianceReportRow, report_id)

        row = await self._db.read("supervision.get", txn)
        if row is None:
            raise NotFound(f"compliance report {quote(report_id)} does not exist on this node")
        return _row_report(row)

    async def latest(self, agency_code: str, limit: int = 20) -> list[ComplianceReport]:
        """The agency's newest reports, newest first."""

        async def txn(session: AsyncSession) -> list[ComplianceReportRow]:
            rows = await session.exec(
                select(ComplianceReportRow)
                .where(col(ComplianceReportRow.agency_code) == agency_code)
                .order_by(col(ComplianceReportRow.generated_at).desc())
                .limit(limit)
            )
            return list(rows)

        return [_row_report(r) for r in await self._db.read("supervision.latest", txn)]

    async def agencies(self, *, offset: int = 0, limit: int = 50) -> tuple[list[str], bool]:
        """One page (by code) of the agencies whose compliance this node reports: those
        providing resources of its region and those with a stored report; and whether more
        follow. A region has a few hundred agencies; at most :data:`MAX_AGENCIES` are read."""
        limit = max(1, min(limit, 200))

        async def txn(session: AsyncSession) -> set[str]:
            providers = await session.exec(
                select(CatalogEntryRow.provider_code)
                .where(col(CatalogEntryRow.region) == self._region)
                .distinct()
                .limit(MAX_AGENCIES)
            )
            reported = await session.exec(
                select(ComplianceReportRow.agency_code).distinct().limit(MAX_AGENCIES)
            )
            return set(providers.all()) | set(reported.all())

        codes = sorted(await self._db.read("supervision.agencies", txn))
        start = max(0, offset)
        return codes[start : start + limit], len(codes) > start + limit

    async def recount(
        self, report_id: str, progress: Callable[[int], None] | None = None
    ) -> Recount:
        """Verify the audit chain over the report's range, then count its figures again from
        the log as it is now (the records up to the report's head only)."""
        report = await self.get(report_id)
        read = [report.window_first] + [f.first for f in report.figures if f.first]
        first = min((s for s in read if s), default=0)
        last = max([report.window_last] + [f.last for f in report.figures])
        if first:
            chain = await self._audit.verify_chain(
                after=first - 1, limit=last - first + 1, progress=progress
            )
            if chain.ok and chain.checked != last - first + 1:
                chain = ChainCheck(
                    False,
                    chain.checked,
                    first + chain.checked,
                    f"record #{first + chain.checked} is missing",
                    after=first - 1,
                )
        else:
            chain = ChainCheck(True, 0)

        async def txn(session: AsyncSession) -> list[Figure]:
            conn = await session.connection()
            counted = await count(
                conn,
                agency_code=report.agency_code,
                agency_uri=self.agency_uri(report.agency_code),
                region=self._region,
                start=report.period_start,
                end=report.period_end,
                first=report.window_first,
                last=report.window_last,
                moment=report.generated_at,
                overdue_corrections=self._overdue,
            )
            return counted.figures

        again = await self._db.read("supervision.recount", txn)
        stored = {f.kind: f for f in report.figures}
        differences = [(stored[f.kind], f) for f in again if stored.get(f.kind) != f]
        return Recount(report, chain, first, last, differences)

    @staticmethod
    def page(
        report: ComplianceReport, kind: Kind | None, size: int, token: str
    ) -> tuple[list[Finding], str]:
        """One page of the report's findings (of ``kind`` only, when given)."""
        offset, size = paging.offset_page(token, size, default=DEFAULT_PAGE, maximum=MAX_PAGE)
        findings = [f for f in report.findings if kind is None or f.kind is kind]
        chunk = findings[offset : offset + size]
        more = offset + size < len(findings)
        return chunk, paging.offset_token(offset + size) if more else ""
