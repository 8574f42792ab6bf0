"""Rectification notices (责令限期改正 → 通报批评, 第四十二条): the authority orders an agency to
rectify one figure by a deadline; the agency is notified; the node closes the notice by itself
when the figure recovers, and otherwise, at the deadline, escalates it to the published
criticisms every authenticated caller may read. Each transition is stored with its time and
audited.

When a figure *recovers*, per kind:

- a figure counted from the audit log (一, 二, 四, 五, 六 of 第四十二条): the agency has made
  occasions of it since the notice and none was a finding; at the deadline, no finding since
  the notice is a recovery too (nothing left to rectify), one or more is not;
- late aggregation (三): none of the agency's resources with a fixed cycle is overdue now
  (its last aggregation within the cycle's allowance, node.records);
- the quality grade: none of the agency's checked resources grades D or E at its newest check;
- overdue corrections: none of the agency's error reports is overdue now.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import os
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
import structlog
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Identity, authority_identity
from gateway.quote import quote
from node import paging
from node.audit import AuditEntry, Operation, request_digest
from node.catalog import ResourceStatus
from node.codes import Region
from node.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from node.models import RectificationNoticeRow
from node.records import CYCLE_ALLOWANCE
from node.sharing import NotificationKind, Notifications
from node.supervision._count import DATA, count, entries_of, published
from node.supervision._reports import Supervision, check_agency_code
from node.supervision._types import MAX_PERIOD_DAYS, Kind
from node.tasks import BackgroundJob
from node.times import CST

__all__ = [
    "MAX_NOTE",
    "NOTICE_METHOD",
    "Notice",
    "NoticeStatus",
    "NoticeWatch",
    "Rectifications",
]

#: Before any error report: where "every report" starts.
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)

log = structlog.get_logger("govnode.supervision")

#: Characters of a notice's note, at most.
MAX_NOTE = 2000
#: The audit record's method for a notice the node closed or escalated by itself (an RPC is
#: audited as itself).
NOTICE_METHOD = "supervision.notice"
_DEFAULT_PAGE = 50
_MAX_PAGE = 200


class NoticeStatus(enum.StrEnum):
    OPEN = "open"  # 责令限期改正, the deadline not reached
    RECTIFIED = "rectified"  # 已改正: the figure recovered
    CRITICISED = "criticised"  # 逾期不改正: published as 通报批评


@dataclass(frozen=True)
class Notice:
    """A stored rectification notice (node.models.RectificationNoticeRow)."""

    id: str
    agency_code: str
    kind: Kind
    note: str
    deadline: dt.datetime
    issued_by: str
    issued_at: dt.datetime
    issued_at_sequence: int
    status: NoticeStatus
    closed_at: dt.datetime | None
    outcome: str


def _notice(row: RectificationNoticeRow) -> Notice:
    return Notice(
        id=row.id,
        agency_code=row.agency_code,
        kind=Kind(row.kind),
        note=row.note,
        deadline=row.deadline,
        issued_by=row.issued_by,
        issued_at=row.issued_at,
        issued_at_sequence=row.issued_at_sequence,
        status=NoticeStatus(row.status),
        closed_at=row.closed_at,
        outcome=row.outcome,
    )


def _cst(moment: dt.datetime) -> str:
    return moment.astimezone(CST).strftime("%Y-%m-%d %H:%M CST")


class Rectifications:
    """Rectification notices of this node's agencies: issued by the node's authority, read by
    the authority and the agency, closed or escalated by :meth:`settle`."""

    def __init__(
        self,
        supervision: Supervision,
        notifications: Notifications | None,
        *,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._supervision = supervision
        self._db = supervision.db
        self._notifications = notifications
        self._clock = clock or supervision.now

    def _authority(self) -> str:
        s = self._supervision
        return authority_identity(s.region, s.trust_domain)

    # --- issuing and reading --------------------------------------------------------------

    async def issue(
        self,
        caller: Identity,
        agency_code: str,
        kind: Kind,
        deadline: dt.datetime,
        note: str,
        *,
        audit_it: bool = False,
    ) -> Notice:
        """Order the agency to rectify ``kind`` by ``deadline`` (this node's authority only).
        ``audit_it``: write an audit record for it (the CLI; an RPC is audited by the guard)."""
        if caller.uri != self._authority():
            raise PermissionDenied(
                f"rectification notices are issued by the data management authority of region "
                f"{self._supervision.region} (第四十二条); {caller.uri} is not it"
            )
        check_agency_code(agency_code)
        if kind is Kind.OVERDUE_CORRECTIONS and self._supervision.overdue_corrections is None:
            raise FailedPrecondition(
                "kind: overdue corrections are not counted on this node (error reports, 纠错, "
                "are not available yet), so no notice can follow them"
            )
        note = note.strip()
        if not note:
            raise InvalidArgument("note is required: what the agency must rectify")
        if len(note) > MAX_NOTE:
            raise InvalidArgument(f"note: at most {MAX_NOTE} characters, got {len(note)}")
        now = self._clock()
        if deadline <= now:
            raise InvalidArgument(f"deadline: {deadline.isoformat()} has passed")
        if deadline - now > dt.timedelta(days=MAX_PERIOD_DAYS):
            raise InvalidArgument(f"deadline: at most {MAX_PERIOD_DAYS} days ahead")
        head, _ = await self._supervision.audit.head()
        row = RectificationNoticeRow(
            id=f"{self._supervision.region}-N-{os.urandom(8).hex()}",
            agency_code=agency_code,
            kind=kind.value,
            note=note,
            deadline=deadline,
            issued_by=caller.uri,
            issued_at=now,
            issued_at_sequence=head,
            status=NoticeStatus.OPEN.value,
        )

        async def txn(session: AsyncSession) -> Notice:
            session.add(row)
            if self._notifications is not None:
                self._notifications.add(
                    session,
                    self._supervision.agency_uri(agency_code),
                    NotificationKind.RECTIFICATION_NOTICE,
                    f"责令限期改正 (第四十二条): {kind.term}，限 {_cst(deadline)} 前改正；"
                    f"通知 {row.id}: {quote(note, 200)}",
                    at=now,
                )
            return _notice(row)

        notice = await self._db.write("supervision.issue_notice", txn)
        if self._notifications is not None:
            self._notifications.notify_changed()
        if audit_it:
            await self._audit_step(notice, NoticeStatus.OPEN)
        return notice

    async def _audit_step(self, notice: Notice, status: NoticeStatus) -> None:
        await self._supervision.audit.append(
            AuditEntry(
                caller=self._authority(),
                method=NOTICE_METHOD,
                operation=Operation.MAINTAIN,
                outcome="OK",
                request_digest=request_digest(f"{NOTICE_METHOD} {notice.id}".encode()),
                detail={"notice": notice.id, "status": status.value, "agency": notice.agency_code},
            )
        )

    async def get(self, notice_id: str) -> Notice:
        async def txn(session: AsyncSession) -> RectificationNoticeRow | None:
            return await session.get(RectificationNoticeRow, notice_id)

        row = await self._db.read("supervision.get_notice", txn) if len(notice_id) <= 64 else None
        if row is None:
            raise NotFound(f"rectification notice {quote(notice_id)} does not exist on this node")
        return _notice(row)

    async def notices(
        self,
        caller: Identity | None,
        *,
        agency_code: str = "",
        status: NoticeStatus | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[Notice], str]:
        """Notices, newest first. The authority (this node's or the province's) reads every
        agency's; an agency its own; ``caller`` None: the operator (CLI). Criticised notices
        are public: :meth:`criticisms`."""
        if agency_code:
            check_agency_code(agency_code)
        if caller is not None:
            s = self._supervision
            province = Region(s.region).province_code
            authorities = {self._authority(), authority_identity(province, s.trust_domain)}
            if caller.uri not in authorities:
                own = caller.subject if caller.role.value == "agency" else ""
                if not own or caller.region != s.region or agency_code not in ("", own):
                    raise PermissionDenied(
                        "rectification notices are read by the agency they concern and the data "
                        f"management authority (第四十二条); {caller.uri} may read only its own"
                        if own
                        else "rectification notices are read by the agency they concern and the "
                        f"data management authority (第四十二条); {caller.uri} is neither"
                    )
                agency_code = own
        return await self._page(agency_code, status, page_size, page_token)

    async def criticisms(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[Notice], str]:
        """The published criticisms (通报批评): notices not rectified by their deadline."""
        return await self._page("", NoticeStatus.CRITICISED, page_size, page_token)

    async def _page(
        self, agency_code: str, status: NoticeStatus | None, size: int, token: str
    ) -> tuple[list[Notice], str]:
        offset, size = paging.offset_page(token, size, default=_DEFAULT_PAGE, maximum=_MAX_PAGE)

        async def txn(session: AsyncSession) -> list[RectificationNoticeRow]:
            statement = select(RectificationNoticeRow)
            if agency_code:
                statement = statement.where(col(RectificationNoticeRow.agency_code) == agency_code)
            if status is not None:
                statement = statement.where(col(RectificationNoticeRow.status) == status.value)
            rows = await session.exec(
                statement.order_by(
                    col(RectificationNoticeRow.issued_at).desc(), col(RectificationNoticeRow.id)
                )
                .offset(offset)
                .limit(size + 1)
            )
            return list(rows)

        rows = await self._db.read("supervision.list_notices", txn)
        page, next_token = paging.offset_rows(rows, offset, size)
        return [_notice(r) for r in page], next_token

    # --- the scheduler's work ---------------------------------------------------------------

    async def settle(self) -> list[Notice]:
        """Close every open notice whose figure recovered, escalate every other one past its
        deadline; returns the notices changed."""
        now = self._clock()

        async def txn(session: AsyncSession) -> list[RectificationNoticeRow]:
            rows = await session.exec(
                select(RectificationNoticeRow)
                .where(col(RectificationNoticeRow.status) == NoticeStatus.OPEN.value)
                .order_by(col(RectificationNoticeRow.issued_at))
                .limit(1000)
            )
            return list(rows)

        changed = []
        for row in await self._db.read("supervision.open_notices", txn):
            notice = _notice(row)
            recovered, why = await self._recovered(notice, now)
            if recovered:
                status, outcome = NoticeStatus.RECTIFIED, f"已改正: {why}"
            elif now >= notice.deadline:
                status, outcome = NoticeStatus.CRITICISED, f"逾期未改正，通报批评: {why}"
            else:
                continue
            done = await self._close(notice, status, outcome, now)
            if done is not None:
                changed.append(done)
        return changed

    async def _close(
        self, notice: Notice, status: NoticeStatus, outcome: str, now: dt.datetime
    ) -> Notice | None:
        async def txn(session: AsyncSession) -> Notice | None:
            result = await session.exec(
                sa.update(RectificationNoticeRow)
                .where(
                    col(RectificationNoticeRow.id) == notice.id,
                    col(RectificationNoticeRow.status) == NoticeStatus.OPEN.value,
                )
                .values(status=status.value, closed_at=now, outcome=outcome)
            )
            if result.rowcount != 1:
                return None  # another process of this node settled it first
            if self._notifications is not None:
                self._notifications.add(
                    session,
                    self._supervision.agency_uri(notice.agency_code),
                    NotificationKind.RECTIFICATION_NOTICE,
                    f"整改通知 {notice.id} ({notice.kind.term}): {outcome}",
                    at=now,
                )
            row = await session.get(RectificationNoticeRow, notice.id)
            assert row is not None
            return _notice(row)

        done = await self._db.write("supervision.close_notice", txn)
        if done is None:
            return None
        if self._notifications is not None:
            self._notifications.notify_changed()
        await self._audit_step(notice, status)
        log.info("supervision.notice_closed", notice=notice.id, status=status.value)
        return done

    async def _recovered(self, notice: Notice, now: dt.datetime) -> tuple[bool, str]:
        """Whether the notice's figure recovered, and why (or why not) in Chinese."""
        s = self._supervision
        code = notice.agency_code
        start = notice.issued_at
        end = now + dt.timedelta(microseconds=1)

        async def txn(session: AsyncSession) -> tuple[bool, str]:
            conn = await session.connection()
            if notice.kind is Kind.LATE_AGGREGATION:
                entries = await entries_of(conn, code, s.region)
                overdue = []
                for entry in entries:
                    allowance = CYCLE_ALLOWANCE[entry.update_cycle]
                    if allowance is None or entry.status is not ResourceStatus.ACTIVE:
                        continue
                    last = (
                        await conn.execute(
                            sa.select(DATA.c.last_aggregated_at).where(
                                DATA.c.resource_code == entry.resource_code
                            )
                        )
                    ).scalar()
                    since = last or published(entry)
                    if since is not None and now - since > allowance:
                        overdue.append(entry.resource_code)
                if overdue:
                    return False, f"仍有 {len(overdue)} 项资源逾期未汇聚: {', '.join(overdue[:5])}"
                return True, "本单位资源均已按更新周期汇聚"
            head, _ = await s.audit.head()
            first = notice.issued_at_sequence + 1
            counted = await count(
                conn,
                agency_code=code,
                agency_uri=s.agency_uri(code),
                region=s.region,
                start=start,
                end=end,
                first=first if head >= first else 0,
                last=head,
                moment=now,
                overdue_corrections=s.overdue_corrections,
            )
            figure = next(f for f in counted.figures if f.kind is notice.kind)
            if notice.kind is Kind.QUALITY:
                if figure.denominator and not figure.numerator:
                    return True, f"各资源质量等级均在 D 以上 (综合 {figure.value})"
                return False, f"{figure.numerator} 项资源质量等级为 D 或 E"
            if notice.kind is Kind.OVERDUE_CORRECTIONS:
                if s.overdue_corrections is None:
                    return False, "本节点未接入纠错台账，无法判断"
                # Recovered: nothing still open past its due time, and nothing that fell due
                # since the notice resolved late.
                still_open, _ = await s.overdue_corrections(
                    conn, code, EARLIEST, now, now, open_only=True
                )
                late, _ = await s.overdue_corrections(conn, code, notice.issued_at, now, now)
                if still_open or late:
                    return False, f"仍有 {still_open + late} 项纠错逾期未处理"
                return True, "无逾期未处理的纠错"
            if figure.numerator:
                return (
                    False,
                    f"通知后又发现 {figure.numerator} 起 ({figure.numerator}/{figure.denominator})",
                )
            if figure.denominator or now >= notice.deadline:
                return True, f"通知后 {figure.denominator} 次相关操作均无违规"
            return False, "通知后尚无相关操作"

        return await self._db.read("supervision.recovered", txn)


class NoticeWatch(BackgroundJob):
    """Runs :meth:`Rectifications.settle` every ``every_s`` seconds until :meth:`stop`."""

    task_name = "supervision.notice_watch"

    def __init__(self, rectifications: Rectifications, every_s: float) -> None:
        self._rectifications = rectifications
        self._every = every_s
        #: Set after each look (tests and operators wait on it, not on the clock).
        self.ran = asyncio.Event()

    async def _forever(self) -> None:
        while True:
            try:
                changed = await self._rectifications.settle()
                if changed:
                    log.info("supervision.notices_settled", notices=len(changed))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("supervision.notice_watch_error")
            self.ran.set()
            await asyncio.sleep(self._every)
