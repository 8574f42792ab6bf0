"""The province roll-up (issue 15 item 6, 第八、十五条): every node computes a summary of its
region (:func:`compute_summary`); a city signs it and sends it to the province, which checks it
(:meth:`Rollup.accept`) and keeps the newest per region beside its own, and shows them as one
province-wide table (:meth:`Rollup.table`).

Computing a summary is SQL, in small transactions: the agencies of the region, then one
transaction per agency (node.supervision's own count over the period's audit records, a page
at a time), then the resources' newest quality checks in chunks. The event loop runs between
them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography import x509
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

import node.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from gateway.identity import Identity, Role
from gateway.quote import quote
from node.codes import Region, credit_code_problem, region_problem
from node.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from node.models import SupervisionSummaryRow
from node.storage import in_chunks
from node.supervision._count import count, window
from node.supervision._reports import Supervision
from node.supervision._summary import (
    MAX_AGENCIES,
    MAX_RESOURCES,
    AgencyFigures,
    ResourceQuality,
    Summary,
    SummaryError,
    body_json,
    check_summary,
    parse_body,
    whole_seconds,
)
from node.supervision._types import UNMEASURED, Figure, Kind
from node.times import CST

__all__ = ["CityTable", "Rollup", "compute_summary", "month_so_far"]

CATALOG = SQLModel.metadata.tables["catalog_entry"]
QUALITY = SQLModel.metadata.tables["quality_check"]
ERRORS = SQLModel.metadata.tables["data_error"]
AUDIT = SQLModel.metadata.tables["audit_record"]
#: Error reports counted as open: not yet resolved (node.quality's statuses).
_OPEN = ("open", "correction_requested")
#: A summary may not say it was made further ahead than this (clocks differ a little).
MAX_FUTURE = dt.timedelta(minutes=10)
#: Regions the province table lists, at most (a province has a few dozen cities).
MAX_REGIONS = 100


def month_so_far(moment: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The summary's period: from the start of the current month in China Standard Time to
    ``moment`` (UTC)."""
    local = moment.astimezone(CST)
    start = dt.datetime(local.year, local.month, 1, tzinfo=CST).astimezone(dt.UTC)
    return start, max(moment, start + dt.timedelta(seconds=1))


async def _agencies(supervision: Supervision, first: int, last: int) -> list[str]:
    """The agencies of the region that provide resources here or called the node in the
    period's audit records ``first``..``last``, by code."""
    region, prefix = supervision.region, supervision.agency_uri("")

    async def txn(session: AsyncSession) -> set[str]:
        conn = await session.connection()
        found = {
            str(row[0])
            for row in await conn.execute(
                sa.select(CATALOG.c.provider_code).where(CATALOG.c.region == region).distinct()
            )
        }
        if first:
            callers = await conn.execute(
                sa.select(AUDIT.c.caller)
                .where(
                    AUDIT.c.sequence >= first,
                    AUDIT.c.sequence <= last,
                    AUDIT.c.caller.like(prefix + "%"),
                )
                .distinct()
            )
            found.update(str(row[0]).removeprefix(prefix) for row in callers)
        return found

    codes = await supervision.db.read("rollup.agencies", txn)
    return sorted(c for c in codes if credit_code_problem(c) is None)


async def _resources(supervision: Supervision) -> tuple[list[ResourceQuality], int]:
    region = supervision.region

    async def owned(session: AsyncSession) -> tuple[list[tuple[str, str]], int]:
        conn = await session.connection()
        total = (
            await conn.execute(
                sa.select(sa.func.count()).select_from(CATALOG).where(CATALOG.c.region == region)
            )
        ).scalar_one()
        rows = await conn.execute(
            sa.select(CATALOG.c.resource_code, CATALOG.c.provider_code)
            .where(CATALOG.c.region == region)
            .order_by(CATALOG.c.resource_code)
            .limit(MAX_RESOURCES)
        )
        return [(str(r[0]), str(r[1])) for r in rows], int(total)

    codes, total = await supervision.db.read("rollup.resources", owned)
    out: list[ResourceQuality] = []
    for chunk in in_chunks(codes):  # their quality checks and error reports, per query
        names = [code for code, _ in chunk]

        async def newest(
            session: AsyncSession, names: list[str] = names
        ) -> tuple[dict[str, Any], dict[str, int]]:
            conn = await session.connection()
            ids = (
                sa.select(sa.func.max(QUALITY.c.id))
                .where(QUALITY.c.resource_code.in_(names))
                .group_by(QUALITY.c.resource_code)
            )
            checks = {
                r.resource_code: r
                for r in await conn.execute(
                    sa.select(
                        QUALITY.c.resource_code,
                        QUALITY.c.overall,
                        QUALITY.c.grade,
                        QUALITY.c.checked_at,
                    ).where(QUALITY.c.id.in_(ids))
                )
            }
            errors = {
                str(r[0]): int(r[1])
                for r in await conn.execute(
                    sa.select(ERRORS.c.resource_code, sa.func.count())
                    .where(ERRORS.c.resource_code.in_(names), ERRORS.c.status.in_(_OPEN))
                    .group_by(ERRORS.c.resource_code)
                )
            }
            return checks, errors

        checks, errors = await supervision.db.read("rollup.quality", newest)
        for code, agency in chunk:
            check = checks.get(code)
            out.append(
                ResourceQuality(
                    code=code,
                    agency_code=agency,
                    score=None if check is None or check.overall is None else float(check.overall),
                    grade="" if check is None else check.grade,
                    checked_at=None if check is None else check.checked_at,
                    open_errors=errors.get(code, 0),
                )
            )
    return out, total


async def compute_summary(supervision: Supervision, node_uri: str, *, max_agencies: int) -> Summary:
    """This node's summary of its region for the current month so far: the newest quality
    check of each resource it owns (at most :data:`MAX_RESOURCES`, the rest counted), and the
    compliance figures of each agency of its region that provides resources or called the node
    in the period (at most ``max_agencies`` by code, the rest counted in ``agencies_total``)."""
    moment = whole_seconds(supervision.now())
    start, end = month_so_far(moment)
    head_size, head_hash = await supervision.audit.head()

    async def span(session: AsyncSession) -> tuple[int, int]:
        return await window(await session.connection(), start, end, head_size)

    first, last = await supervision.db.read("rollup.window", span)
    codes = await _agencies(supervision, first, last)
    limit = max(0, min(max_agencies, MAX_AGENCIES))
    agencies: list[AgencyFigures] = []
    for code in codes[:limit]:

        async def counted(session: AsyncSession, code: str = code) -> list[Figure]:
            result = await count(
                await session.connection(),
                agency_code=code,
                agency_uri=supervision.agency_uri(code),
                region=supervision.region,
                start=start,
                end=end,
                first=first,
                last=last,
                moment=moment,
                overdue_corrections=supervision.overdue_corrections,
            )
            return result.figures

        figures = await supervision.db.read("rollup.count", counted)
        agencies.append(AgencyFigures(code, first, last, figures))
    resources, resources_total = await _resources(supervision)
    return Summary(
        region=supervision.region,
        node=node_uri,
        generated_at=moment,
        period_start=start,
        period_end=end,
        head_size=head_size,
        head_hash=head_hash,
        resources=resources,
        resources_total=resources_total,
        agencies=agencies,
        agencies_total=len(codes),
    )


# --- at the province ------------------------------------------------------------------------


@dataclass(frozen=True)
class CityTable:
    """One region's newest summary as the province holds it, and the totals over its
    agencies (numerators and denominators summed per kind)."""

    summary: Summary
    signed_by: str
    received_at: dt.datetime
    stale: bool

    def totals(self) -> list[Figure]:
        sums: dict[Kind, list[int]] = {kind: [0, 0, 0] for kind in Kind}
        measured: set[Kind] = set()
        for agency in self.summary.agencies:
            for f in agency.figures:
                if f.value == UNMEASURED:
                    continue
                measured.add(f.kind)
                s = sums[f.kind]
                s[0] += f.numerator
                s[1] += f.denominator
                s[2] += f.noted
        return [
            Figure(kind, s[0], s[1], noted=s[2], value="" if kind in measured else UNMEASURED)
            for kind, s in sums.items()
        ]

    def grades(self) -> dict[str, int]:
        """Resources listed per grade of their newest check ("" for unchecked)."""
        out: dict[str, int] = {}
        for r in self.summary.resources:
            out[r.grade] = out.get(r.grade, 0) + 1
        return out


class Rollup:
    """The province's side: summaries received from member cities, checked against the
    province root, the newest per region kept; and the province-wide table."""

    def __init__(
        self,
        supervision: Supervision,
        root: x509.Certificate,
        *,
        is_member: Callable[[str], Awaitable[bool]],
        stale_after: dt.timedelta,
    ) -> None:
        self._supervision = supervision
        self._root = root
        self._is_member = is_member
        self.stale_after = stale_after

    @property
    def region(self) -> str:
        return self._supervision.region

    @property
    def is_province(self) -> bool:
        return Region(self.region).is_province

    @property
    def trust_domain(self) -> str:
        return self._supervision.trust_domain

    def now(self) -> dt.datetime:
        return self._supervision.now()

    async def check_sender(self, sender: Identity) -> None:
        """Only a member city's node sends summaries, to its province."""
        if sender.role is not Role.NODE:
            raise PermissionDenied(
                f"{sender} may not publish a supervision summary: only a city's govnode node "
                "sends its summary to the province; an agency or authority cannot"
            )
        if not self.is_province:
            raise FailedPrecondition(
                f"this node ({self.region}) is a city node: supervision summaries go to the "
                "province's node"
            )
        region = sender.region
        if (
            region_problem(region) is not None
            or Region(region).is_province
            or not Region(self.region).contains(region)
            or not await self._is_member(region)
        ):
            raise PermissionDenied(
                f"{sender} may not publish a supervision summary: it is not a city node that "
                f"has joined province {self.region}"
            )

    async def accept(self, sender: Identity, data: bytes) -> tuple[Summary, bool]:
        """Check a summary ``sender`` sent and keep it if it is newer than the one held;
        returns it and whether it was kept."""
        await self.check_sender(sender)
        try:
            summary, signer = check_summary(data, self._root, self._supervision.trust_domain)
        except SummaryError as exc:
            raise InvalidArgument(f"summary: refused ({exc.check}): {exc}") from None
        if summary.region != sender.region:
            raise PermissionDenied(
                f"summary: {sender} may send only its own region's summary "
                f"({sender.region}), not one for region {summary.region}"
            )
        if signer.uri != sender.uri:
            raise PermissionDenied(
                f"summary: signed by {signer}, but sent by {sender}: a node sends only the "
                "summary it signed itself"
            )
        if summary.generated_at > self._supervision.now() + MAX_FUTURE:
            raise InvalidArgument(
                f"summary: generated at {summary.generated_at.isoformat()}, in the future"
            )
        kept = await self.store(summary, data, signer.uri)
        return summary, kept

    async def store(self, summary: Summary, data: bytes, signed_by: str) -> bool:
        """Keep ``summary`` as its region's newest, unless a newer one is held."""
        received = self._supervision.now()

        async def txn(session: AsyncSession) -> bool:
            row = await session.get(SupervisionSummaryRow, summary.region)
            if row is not None and row.generated_at >= summary.generated_at:
                return False
            fields: dict[str, Any] = {
                "signed_by": signed_by,
                "generated_at": summary.generated_at,
                "received_at": received,
                "period_start": summary.period_start,
                "period_end": summary.period_end,
                "body": body_json(summary),
                "document": data.decode(),
            }
            if row is None:
                row = SupervisionSummaryRow(region=summary.region, **fields)
            else:
                for name, value in fields.items():
                    setattr(row, name, value)
            session.add(row)
            return True

        return await self._supervision.db.write("rollup.store", txn)

    async def table(self, region: str = "") -> list[CityTable]:
        """The newest summary of every region (or of ``region``), by region."""
        if region and region_problem(region) is not None:
            raise InvalidArgument(f"region: {quote(region)} {region_problem(region)}")

        async def txn(session: AsyncSession) -> list[SupervisionSummaryRow]:
            query = select(SupervisionSummaryRow).order_by(col(SupervisionSummaryRow.region))
            if region:
                query = query.where(col(SupervisionSummaryRow.region) == region)
            return list(await session.exec(query.limit(MAX_REGIONS)))

        now = self._supervision.now()
        return [
            CityTable(
                summary=parse_body(row.body),
                signed_by=row.signed_by,
                received_at=row.received_at,
                stale=now - row.generated_at > self.stale_after,
            )
            for row in await self._supervision.db.read("rollup.table", txn)
        ]
