"""Error correction (纠错, 第十六条; 国发〔2016〕51号 "疑义、错误信息快速校核"): a consumer that
received a record reports it wrong, the record is marked disputed at once (异议标注) for every
consumer on every node, the provider and the owner node's authority are notified, and the
provider resolves the report.

Who may report: an agency that may use the resource now (the same access decision as Query and
Verify, node.sharing.AccessDecider) and that received its data: an OK Verify, Compare, Query,
Exchange or Subscribe call by it on the resource in this node's audit log within
``report_lookback_days`` (on a routed call the owner's audit record names the original caller).
The record must exist, checked only after the right is, so a report is no oracle for records.
The provider does not report its own data: it corrects it by a change request (第四十一条).

The mark is ``record.open_disputes``, changed in the transaction of each report and resolution
(node.records._disputes reads it on the hot path). Pure domain: no grpc.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Identity, Role, authority_identity, provider_identity
from gateway.quote import quote
from node import paging
from node.catalog import Catalog, ResourceEntry, ShareMethod
from node.codes import Region
from node.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from node.governance import (
    ChangeAction,
    ChangeDraft,
    ChangeRequest,
    ChangeRequests,
    ChangeStatus,
    ChangeTarget,
)
from node.idempotency import check_request_id, remember, replay
from node.models import DataErrorRow
from node.records import OPEN_STATUSES, full_key, schema_for
from node.sharing import MAX_TEXT as MAX_REASON
from node.sharing import AccessDecider, NotificationKind, Notifications, check_scope
from node.storage import Database

__all__ = [
    "MAX_CORRECTION_RECIPIENTS",
    "MAX_OPEN_PER_RECORD",
    "MAX_TEXT",
    "RECEIVED_METHODS",
    "DataError",
    "DataErrorStatus",
    "DataErrors",
    "ErrorFilter",
    "ErrorSettings",
    "region_of_error_id",
]

#: Longest description, suggested value, evidence or note (characters).
MAX_TEXT = 2000
#: Most reports open on one record at once: the mark's lookup stays bounded, and a record can
#: not be buried under reports.
MAX_OPEN_PER_RECORD = 100
#: Most callers one correction is sent to (distinct, in caller order); past it the node's
#: authority is told how to find the rest in the audit log.
MAX_CORRECTION_RECIPIENTS = 1000
DEFAULT_PAGE = 50
MAX_PAGE = 200
#: The share calls by which a consumer receives a resource's data, as the audit log names them.
RECEIVED_METHODS = tuple(
    f"/govnode.v1.SharingService/{name}"
    for name in ("Verify", "Compare", "Query", "Exchange", "Subscribe")
)
_SUBSCRIBE = "/govnode.v1.SharingService/Subscribe"
#: The bulk share calls: their callers hold copies of many records (数据交换, 主动推送).
_BULK = ("/govnode.v1.SharingService/Exchange", _SUBSCRIBE)
AUDIT = SQLModel.metadata.tables["audit_record"]
RECORD = SQLModel.metadata.tables["record"]
#: The methods a consumer may hold a right to a resource by, tried in this order.
_METHODS = (
    ShareMethod.QUERY,
    ShareMethod.VERIFY,
    ShareMethod.COMPARE,
    ShareMethod.EXCHANGE,
    ShareMethod.SUBSCRIBE,
)


class DataErrorStatus(enum.StrEnum):
    """Where a report stands."""

    OPEN = "open"  # awaiting the provider; the record is disputed
    REJECTED = "rejected"  # the provider confirmed the stored value
    CORRECTION_REQUESTED = "correction_requested"  # a change request awaits the authority
    CORRECTED = "corrected"  # the correction was applied (第四十一条)


@dataclass(frozen=True)
class ErrorSettings:
    """``[quality]`` keys of error correction."""

    #: A consumer may report on what it received within this many days.
    report_lookback_days: int = 90
    #: The provider should resolve a report within this many days (its ``due_at``).
    correction_days: int = 7
    #: A correction is sent to the Exchange and Subscribe callers of this many days before
    #: the report, beside the callers that received the record while it was disputed.
    correction_lookback_days: int = 30


@dataclass(frozen=True)
class DataError:
    id: str
    status: DataErrorStatus
    resource_code: str
    provider_code: str
    key: dict[str, str]
    item: str
    description: str
    suggested_value: str
    evidence: str
    reporter: str
    reported_at: dt.datetime
    due_at: dt.datetime
    resolved_at: dt.datetime | None
    resolved_by: str
    resolution_note: str
    change_request_id: str
    corrected_version: int

    def overdue(self, now: dt.datetime) -> bool:
        return self.status.value in OPEN_STATUSES and now > self.due_at


@dataclass(frozen=True)
class ErrorFilter:
    """ListDataErrors' filters; empty matches everything the caller may see."""

    resource_code: str = ""
    provider_code: str = ""
    status: DataErrorStatus | None = None
    overdue_only: bool = False


def region_of_error_id(report_id: str) -> str:
    """The region a report id names (its owner node), or "" if none."""
    region, sep, _ = report_id.partition("-")
    return region if sep and len(region) == 6 and region.isdigit() else ""


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


def _from_row(row: DataErrorRow) -> DataError:
    return DataError(
        id=row.id,
        status=DataErrorStatus(row.status),
        resource_code=row.resource_code,
        provider_code=row.provider_code,
        key=json.loads(row.key_values),
        item=row.item,
        description=row.description,
        suggested_value=row.suggested_value,
        evidence=row.evidence,
        reporter=row.reporter,
        reported_at=_utc(row.reported_at),
        due_at=_utc(row.due_at),
        resolved_at=None if row.resolved_at is None else _utc(row.resolved_at),
        resolved_by=row.resolved_by,
        resolution_note=row.resolution_note,
        change_request_id=row.change_request_id,
        corrected_version=row.corrected_version,
    )


def _text(value: str, field: str, *, required: bool = False, why: str = "") -> str:
    value = value.strip()
    if required and not value:
        raise InvalidArgument(f"{field}: required ({why})")
    if len(value) > MAX_TEXT:
        raise InvalidArgument(f"{field}: at most {MAX_TEXT} characters, got {len(value)}")
    return value


def _not_open(row: DataErrorRow) -> FailedPrecondition:
    return FailedPrecondition(
        f"error report {row.id} is {row.status}, not open: only an open report is resolved"
    )


class DataErrors:
    """The error reports on the records this node owns."""

    def __init__(
        self,
        db: Database,
        decider: AccessDecider,
        notifications: Notifications,
        *,
        node_region: str,
        trust_domain: str,
        settings: ErrorSettings | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._db = db
        self._decider = decider
        self._notifications = notifications
        self.region = node_region
        self._td = trust_domain
        self._settings = settings or ErrorSettings()
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    # --- who may do what -----------------------------------------------------------------

    def _authorities(self) -> set[str]:
        province = Region(self.region).province_code
        return {authority_identity(self.region, self._td), authority_identity(province, self._td)}

    def _is_provider(self, caller: Identity, provider_code: str) -> bool:
        return (
            caller.role is Role.AGENCY
            and caller.subject == provider_code
            and caller.region == self.region
        )

    def _may_see(self, caller: Identity, report: DataError) -> bool:
        return (
            caller.uri in self._authorities()
            or caller.uri == report.reporter
            or self._is_provider(caller, report.provider_code)
        )

    async def _check_reporter(self, caller: Identity, entry: ResourceEntry, item: str) -> None:
        """Refuse a caller that may not report on ``entry`` (see the module docstring)."""
        code = entry.resource_code
        if caller.role is not Role.AGENCY:
            raise PermissionDenied(
                f"{caller} is not an agency: error reports (纠错, 第十六条) are made by the "
                "agencies that received the data"
            )
        if self._is_provider(caller, entry.provider_code):
            raise PermissionDenied(
                f"agency {caller.subject} is the provider of resource {code}: a provider "
                "corrects its own data by a change request (AccessService.RequestRecordChange, "
                "第四十一条), not by an error report"
            )
        permit = None
        refusal: Exception | None = None
        for method in _METHODS:
            if method not in entry.share_methods:
                continue
            try:
                permit = await self._decider.access(caller, entry, method)
                break
            except (PermissionDenied, FailedPrecondition) as error:
                refusal = refusal or error
        if permit is None:
            raise refusal or PermissionDenied(
                f"resource {code} is not shared with {caller}: it received nothing from it"
            )
        if item:
            check_scope(permit, entry, [item], "ReportDataError item")
        since = self._clock() - dt.timedelta(days=self._settings.report_lookback_days)
        if not await self._received(caller.uri, code, since):
            raise PermissionDenied(
                f"{caller} received nothing from resource {code} in the last "
                f"{self._settings.report_lookback_days} days (no Verify, Compare, Query, "
                "Exchange or Subscribe call served): only a consumer that received a record "
                "reports it wrong (纠错, 第十六条)"
            )

    async def _received(self, caller: str, code: str, since: dt.datetime) -> bool:
        served = sa.or_(
            AUDIT.c.outcome == "OK",
            # A subscription ends when its caller cancels it, after serving.
            sa.and_(AUDIT.c.method == _SUBSCRIBE, AUDIT.c.outcome == "CANCELLED"),
        )

        async def txn(session: AsyncSession) -> bool:
            conn = await session.connection()
            row = (
                await conn.execute(
                    sa.select(AUDIT.c.sequence)
                    .where(
                        AUDIT.c.caller == caller,
                        AUDIT.c.resource_code == code,
                        AUDIT.c.method.in_(RECEIVED_METHODS),
                        AUDIT.c.at >= since,
                        served,
                    )
                    .limit(1)
                )
            ).first()
            return row is not None

        return await self._db.read("data_errors.received", txn)

    # --- report ------------------------------------------------------------------------------

    async def report(
        self,
        caller: Identity,
        entry: ResourceEntry,
        key: Mapping[str, str],
        *,
        item: str = "",
        description: str,
        suggested_value: str = "",
        evidence: str = "",
        request_id: str = "",
    ) -> DataError:
        """``caller`` reports the record of ``entry`` with ``key`` wrong; the record is marked
        disputed and the provider and this node's authority are notified, all in one
        transaction."""
        check_request_id(request_id)
        code = entry.resource_code
        if entry.region != self.region:
            raise FailedPrecondition(
                f"resource {code} belongs to region {entry.region}: report to its node"
            )
        item = item.strip()
        if len(item) > 64 or (item and item not in {i.name for i in entry.items}):
            raise InvalidArgument(f"item: {quote(item)} is not an item of resource {code}")
        description = _text(description, "description", required=True, why="what is wrong")
        suggested_value = _text(suggested_value, "suggested_value")
        evidence = _text(evidence, "evidence")
        record_key = full_key(schema_for(entry), key, "key")
        await self._check_reporter(caller, entry, item)
        now = self._clock()
        due = now + dt.timedelta(days=self._settings.correction_days)

        async def txn(session: AsyncSession) -> DataError:
            done = await replay(self._db, session, caller, request_id, "report_data_error", code)
            if done:
                return _from_row(await self._row(session, done))
            conn = await session.connection()
            record = (
                await conn.execute(
                    sa.select(RECORD.c.open_disputes).where(
                        RECORD.c.resource_code == code,
                        RECORD.c.record_key == record_key,
                        sa.not_(RECORD.c.deleted),
                    )
                )
            ).first()
            if record is None:
                raise NotFound(f"resource {code} has no record with that key")
            if record[0] >= MAX_OPEN_PER_RECORD:
                raise FailedPrecondition(
                    f"the record already has {record[0]} open error reports (at most "
                    f"{MAX_OPEN_PER_RECORD}); wait for the provider to resolve them"
                )
            mine = (
                await session.exec(
                    select(DataErrorRow.id).where(
                        DataErrorRow.resource_code == code,
                        DataErrorRow.record_key == record_key,
                        DataErrorRow.reporter == caller.uri,
                        DataErrorRow.item == item,
                        col(DataErrorRow.status).in_(OPEN_STATUSES),
                    )
                )
            ).first()
            if mine is not None:
                raise FailedPrecondition(
                    f"{caller} already has report {mine} open on this record and item; "
                    "it is resolved before another is made"
                )
            row = DataErrorRow(
                id=f"{self.region}-E-{os.urandom(8).hex()}",
                status=DataErrorStatus.OPEN.value,
                resource_code=code,
                provider_code=entry.provider_code,
                record_key=record_key,
                key_values=json.dumps(dict(key), ensure_ascii=False, sort_keys=True),
                item=item,
                description=description,
                suggested_value=suggested_value,
                evidence=evidence,
                reporter=caller.uri,
                request_id=request_id,
                reported_at=now,
                due_at=due,
            )
            session.add(row)
            await conn.execute(
                sa.update(RECORD)
                .where(RECORD.c.resource_code == code, RECORD.c.record_key == record_key)
                .values(open_disputes=RECORD.c.open_disputes + 1)
            )
            remember(session, caller, request_id, "report_data_error", code, row.id, now)
            what = f"数据项 {item}" if item else "整条记录"
            message = (
                f"{caller} 报告资源 {code}（{entry.name}）的一条记录有误（{what}）：{description}；"
                f"纠错单号 {row.id}，请于 {due.date().isoformat()} 前核实处理（第十六条）"
            )
            for recipient in (
                provider_identity(self.region, self._td, entry.provider_code),
                authority_identity(self.region, self._td),
            ):
                Notifications.add(
                    session,
                    recipient,
                    NotificationKind.DATA_ERROR_REPORTED,
                    message,
                    at=now,
                    resource_code=code,
                    data_error_id=row.id,
                )
            return _from_row(row)

        report = await self._db.write("data_errors.report", txn)
        self._notifications.notify_changed()
        return report

    async def _row(self, session: AsyncSession, report_id: str) -> DataErrorRow:
        row = await session.get(DataErrorRow, report_id)
        if row is None:
            raise NotFound(f"error report {quote(report_id)} does not exist at this node")
        return row

    # --- read ----------------------------------------------------------------------------

    async def get(self, caller: Identity, report_id: str) -> DataError:
        """One report, for its reporter, the provider and the authorities."""

        async def txn(session: AsyncSession) -> DataError:
            return _from_row(await self._row(session, report_id))

        report = await self._db.read("data_errors.get", txn)
        if not self._may_see(caller, report):
            raise PermissionDenied(
                f"{caller} may not see error report {report.id}: it is seen by its reporter, "
                "the resource's provider and the data management authority"
            )
        return report

    async def list(
        self,
        caller: Identity,
        filters: ErrorFilter = ErrorFilter(),  # frozen: one shared default is safe
        *,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[DataError], str]:
        """The reports ``caller`` may see, newest first, one page."""
        offset, size = paging.offset_page(
            page_token, page_size, default=DEFAULT_PAGE, maximum=MAX_PAGE
        )
        query = select(DataErrorRow)
        if caller.uri not in self._authorities():
            if caller.role is not Role.AGENCY:
                raise PermissionDenied(
                    f"{caller} may not list error reports: they are seen by their reporters, "
                    "the resources' providers and the data management authority"
                )
            mine = col(DataErrorRow.reporter) == caller.uri
            if caller.region == self.region:
                query = query.where(sa.or_(mine, col(DataErrorRow.provider_code) == caller.subject))
            else:
                query = query.where(mine)
        if filters.resource_code:
            query = query.where(DataErrorRow.resource_code == filters.resource_code)
        if filters.provider_code:
            query = query.where(DataErrorRow.provider_code == filters.provider_code)
        if filters.status is not None:
            query = query.where(DataErrorRow.status == filters.status.value)
        if filters.overdue_only:
            query = query.where(
                col(DataErrorRow.status).in_(OPEN_STATUSES),
                col(DataErrorRow.due_at) < self._clock(),
            )
        query = (
            query.order_by(col(DataErrorRow.reported_at).desc(), col(DataErrorRow.id).desc())
            .offset(offset)
            .limit(size + 1)
        )

        async def txn(session: AsyncSession) -> list[DataError]:
            return [_from_row(r) for r in (await session.exec(query)).all()]

        rows = await self._db.read("data_errors.list", txn)
        return paging.offset_rows(rows, offset, size)

    # --- resolve -------------------------------------------------------------------------

    async def reject(
        self, caller: Identity, report_id: str, note: str, *, request_id: str = ""
    ) -> DataError:
        """The provider (or this node's authority) confirms the stored value: the report is
        REJECTED, the mark lifted if no other report on the record is open, and the reporter
        notified."""
        check_request_id(request_id)
        note = _text(note, "note", required=True, why="why the stored value is right")
        now = self._clock()

        async def txn(session: AsyncSession) -> DataError:
            done = await replay(
                self._db, session, caller, request_id, "resolve_data_error", report_id
            )
            if done:
                return _from_row(await self._row(session, done))
            row = await self._locked(session, report_id)
            self._check_resolver(caller, row)
            if row.status != DataErrorStatus.OPEN.value:
                raise _not_open(row)
            row.status = DataErrorStatus.REJECTED.value
            row.resolved_at = now
            row.resolved_by = caller.uri
            row.resolution_note = note
            session.add(row)
            conn = await session.connection()
            await conn.execute(
                sa.update(RECORD)
                .where(
                    RECORD.c.resource_code == row.resource_code,
                    RECORD.c.record_key == row.record_key,
                    RECORD.c.open_disputes > 0,
                )
                .values(open_disputes=RECORD.c.open_disputes - 1)
            )
            remember(session, caller, request_id, "resolve_data_error", report_id, row.id, now)
            Notifications.add(
                session,
                row.reporter,
                NotificationKind.DATA_ERROR_RESOLVED,
                f"纠错单 {row.id}（资源 {row.resource_code}）经提供部门核实，原数据无误：{note}",
                at=now,
                resource_code=row.resource_code,
                data_error_id=row.id,
            )
            return _from_row(row)

        report = await self._db.write("data_errors.reject", txn)
        self._notifications.notify_changed()
        return report

    async def correct(
        self,
        caller: Identity,
        report_id: str,
        values: Mapping[str, str],
        note: str,
        *,
        changes: ChangeRequests,
        catalog: Catalog,
        request_id: str = "",
    ) -> DataError:
        """The provider (or this node's authority, at the operator's desk) asks for the
        correction of an open report (第四十一条): a change request
        with ``values``, made in one transaction with the report's move to
        CORRECTION_REQUESTED (it stays disputed). The authority's review decides
        (:meth:`change_reviewed`)."""
        check_request_id(request_id)
        note = _text(note, "note", required=True, why="what the correction is")
        if not values:
            raise InvalidArgument(
                "corrected_values: required for CORRECTED (the record's new values)"
            )

        async def read(session: AsyncSession) -> DataError:
            return _from_row(await self._row(session, report_id))

        report = await self._db.read("data_errors.get", read)
        authority = caller.uri == authority_identity(self.region, self._td)
        if not (authority or self._is_provider(caller, report.provider_code)):
            raise PermissionDenied(
                f"{caller} may not ask for the correction of error report {report.id}: the "
                f"provider of resource {report.resource_code} (agency {report.provider_code}) "
                "or this node's data management authority asks, by a change request the "
                "authority approves (第四十一条)"
            )
        entry = await catalog.get(report.resource_code)
        reason = f"纠错单 {report.id}：{note}"[:MAX_REASON]
        draft = ChangeDraft(
            target=ChangeTarget.RECORD,
            action=ChangeAction.UPDATE,
            resource_code=entry.resource_code,
            key=report.key,
            values=dict(values),
            entry=None,
            reason=reason,
            request_id=request_id,
        )

        async def within(session: AsyncSession, change: ChangeRequest, now: dt.datetime) -> None:
            row = await self._locked(session, report_id)
            if row.status != DataErrorStatus.OPEN.value:
                raise _not_open(row)
            row.status = DataErrorStatus.CORRECTION_REQUESTED.value
            row.change_request_id = change.id
            row.resolution_note = note
            row.resolved_by = caller.uri
            session.add(row)

        await changes.request(caller, entry, draft, within=within, authority_may_ask=authority)
        self._notifications.notify_changed()
        return await self.get(caller, report_id)

    async def _locked(self, session: AsyncSession, report_id: str) -> DataErrorRow:
        rows = await session.exec(
            select(DataErrorRow).where(DataErrorRow.id == report_id).with_for_update()
        )
        row = rows.first()
        if row is None:
            raise NotFound(f"error report {quote(report_id)} does not exist at this node")
        return row

    async def change_reviewed(
        self, session: AsyncSession, change: ChangeRequest, now: dt.datetime
    ) -> None:
        """The hook of every change request's review (node.governance.ChangeHook), in its
        transaction: the reports the change corrects become CORRECTED (approved: the mark is
        lifted if nothing else is open, the reporter and every caller that received the
        disputed record are notified) or OPEN again (rejected: the provider is notified)."""
        if change.target is not ChangeTarget.RECORD:
            return
        rows = (
            await session.exec(
                select(DataErrorRow).where(
                    DataErrorRow.change_request_id == change.id,
                    DataErrorRow.status == DataErrorStatus.CORRECTION_REQUESTED.value,
                )
            )
        ).all()
        for row in rows:
            if change.status is ChangeStatus.APPROVED:
                await self._corrected(session, row, change, now)
            else:
                self._reopened(session, row, change, now)

    async def _corrected(
        self, session: AsyncSession, row: DataErrorRow, change: ChangeRequest, now: dt.datetime
    ) -> None:
        row.status = DataErrorStatus.CORRECTED.value
        row.corrected_version = change.applied_version
        row.resolved_at = now
        session.add(row)
        conn = await session.connection()
        await conn.execute(
            sa.update(RECORD)
            .where(
                RECORD.c.resource_code == row.resource_code,
                RECORD.c.record_key == row.record_key,
                RECORD.c.open_disputes > 0,
            )
            .values(open_disputes=RECORD.c.open_disputes - 1)
        )
        code = row.resource_code
        Notifications.add(
            session,
            row.reporter,
            NotificationKind.DATA_ERROR_RESOLVED,
            f"纠错单 {row.id}（资源 {code}）已更正：变更申请 {change.id} 经数据管理机构批准，"
            f"记录新版本 {change.applied_version}；说明：{row.resolution_note}",
            at=now,
            resource_code=code,
            data_error_id=row.id,
            change_request_id=change.id,
        )
        recipients, more = await self._recipients(session, row)
        message = (
            f"您获取的资源 {code} 的一条记录曾被报告有误（纠错单 {row.id}），现已依变更申请 "
            f"{change.id} 更正为版本 {change.applied_version}，请重新获取（第十六、四十一条）"
        )
        for recipient in recipients:
            Notifications.add(
                session,
                recipient,
                NotificationKind.DATA_CORRECTED,
                message,
                at=now,
                resource_code=code,
                data_error_id=row.id,
                change_request_id=change.id,
            )
        if more:
            Notifications.add(
                session,
                authority_identity(self.region, self._td),
                NotificationKind.DATA_CORRECTED,
                f"纠错单 {row.id} 的更正通知只发给了前 {MAX_CORRECTION_RECIPIENTS} "
                f"个调用方；其余获取过该记录的调用方请在审计日志中按资源 {code} 查找",
                at=now,
                resource_code=code,
                data_error_id=row.id,
                change_request_id=change.id,
            )

    def _reopened(
        self, session: AsyncSession, row: DataErrorRow, change: ChangeRequest, now: dt.datetime
    ) -> None:
        row.status = DataErrorStatus.OPEN.value
        row.change_request_id = ""
        row.resolution_note = ""
        row.resolved_by = ""
        session.add(row)
        Notifications.add(
            session,
            provider_identity(self.region, self._td, row.provider_code),
            NotificationKind.DATA_ERROR_REPORTED,
            f"纠错单 {row.id} 的更正申请 {change.id} 未获批准（{change.review_comment}），"
            "纠错单重新待处理",
            at=now,
            resource_code=row.resource_code,
            data_error_id=row.id,
            change_request_id=change.id,
        )

    async def _recipients(
        self, session: AsyncSession, row: DataErrorRow
    ) -> tuple[tuple[str, ...], bool]:
        """The distinct callers that received the disputed record: the calls whose audit record
        names the report (``disputed``) since it was made, and the Exchange and Subscribe
        callers of the resource from ``correction_lookback_days`` before it; at most
        :data:`MAX_CORRECTION_RECIPIENTS`, and whether there were more."""
        since = _utc(row.reported_at)
        bulk_since = since - dt.timedelta(days=self._settings.correction_lookback_days)
        marked = sa.and_(
            AUDIT.c.at >= since,
            # Report ids are <region>-E-<16 hex>: no LIKE wildcard in them.
            AUDIT.c.detail.like(f"%{row.id}%"),
        )
        bulk = sa.and_(
            AUDIT.c.at >= bulk_since,
            AUDIT.c.method.in_(_BULK),
            AUDIT.c.outcome.in_(("OK", "CANCELLED")),
        )
        statement = (
            sa.select(AUDIT.c.caller)
            .where(AUDIT.c.resource_code == row.resource_code, sa.or_(marked, bulk))
            .distinct()
            .order_by(AUDIT.c.caller)
            .limit(MAX_CORRECTION_RECIPIENTS + 1)
        )
        conn = await session.connection()
        callers = tuple(str(r[0]) for r in await conn.execute(statement))
        return callers[:MAX_CORRECTION_RECIPIENTS], len(callers) > MAX_CORRECTION_RECIPIENTS

    def _check_resolver(self, caller: Identity, row: DataErrorRow) -> None:
        if self._is_provider(caller, row.provider_code):
            return
        if caller.uri == authority_identity(self.region, self._td):
            return
        raise PermissionDenied(
            f"{caller} may not resolve error report {row.id}: the provider of resource "
            f"{row.resource_code} (agency {row.provider_code} of region {self.region}) or this "
            "node's data management authority resolves it"
        )

    # --- counts ----------------------------------------------------------------------------

    async def open_count(self, code: str) -> int:
        """Reports on ``code`` open now (OPEN or CORRECTION_REQUESTED)."""

        async def txn(session: AsyncSession) -> int:
            conn = await session.connection()
            value = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(DataErrorRow)
                .where(
                    col(DataErrorRow.resource_code) == code,
                    col(DataErrorRow.status).in_(OPEN_STATUSES),
                )
            )
            return int(value or 0)

        return await self._db.read("data_errors.open_count", txn)

    async def overdue(
        self, provider_code: str, start: dt.datetime, end: dt.datetime
    ) -> tuple[int, int]:
        """For supervision (第四十二条): :func:`count_overdue` now, in a read of its own."""
        now = self._clock()

        async def txn(session: AsyncSession) -> tuple[int, int]:
            return await count_overdue(await session.connection(), provider_code, start, end, now)

        return await self._db.read("data_errors.overdue", txn)


async def count_overdue(
    conn: AsyncConnection,
    provider_code: str,
    start: dt.datetime,
    end: dt.datetime,
    now: dt.datetime,
    *,
    open_only: bool = False,
) -> tuple[int, int]:
    """For supervision (第四十二条): of the reports on ``provider_code``'s resources due in
    [start, end), how many are overdue as of ``now`` (still open after their due time, or
    resolved after it; with ``open_only``, only the former), and how many there are:
    (overdue, total). Read on ``conn``, so that a compliance report counts it in the same
    snapshot as its other figures."""
    errors = SQLModel.metadata.tables["data_error"]
    still_open = sa.and_(errors.c.status.in_(OPEN_STATUSES), errors.c.due_at < now)
    late = still_open if open_only else sa.or_(still_open, errors.c.resolved_at > errors.c.due_at)
    statement = sa.select(
        sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((late, 1), else_=0)), 0)
    ).where(
        errors.c.provider_code == provider_code,
        errors.c.due_at >= start,
        errors.c.due_at < end,
    )
    total, overdue = (await conn.execute(statement)).one()
    return int(overdue), int(total)
