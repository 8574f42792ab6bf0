"""授权开放 keys (第三十三条) and their holders' use reports (第三十五条).

An approval issues one key, shown once: ``gok_<key id>_<secret>``, the secret
``secrets.token_urlsafe(32)``. Only its HMAC-SHA256 under the node's key secret (``[opendata]
key_secret``) is stored, so neither the table nor a backup of it holds a key, and a stolen
table without the secret file lets nobody test guesses. :meth:`OpenKeys.authorize` is what a
download or a row query asks (node.opendata._access): it refuses an unknown, revoked or expired
key, another resource, and a key whose holder's use report is overdue, each naming the article.

Use reports (定期向授权数据管理机构报告开发利用情况): one per period of ``[opendata]
use_report_days`` after the approval, due when the period ends; past a grace of ``[opendata]
use_report_grace_days`` the key is suspended until the report arrives. The authority revokes a
key; the provider is told. No grpc.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Identity, Role, provider_identity
from gateway.quote import quote
from node import paging
from node.audit import AuditLog
from node.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from node.idempotency import check_request_id, remember, replay
from node.models import OpenKeyRow, OpenUseReportRow
from node.opendata._open_terms import (
    KeyScope,
    OpenKey,
    Recorder,
    check_text,
    key_of,
    scope_of,
    utc,
)
from node.sharing import NotificationKind, Notifications
from node.storage import Database
from node.times import CST

DEFAULT_PAGE = 50
MAX_PAGE = 200
MAX_REPORT = 20_000  # characters of a use report
KEY_PREFIX = "gok"
_KEY_RE = re.compile(r"^gok_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class ReportPeriod:
    """One reporting period of a key (第三十五条): the report is due at ``end`` and the key is
    suspended from ``suspends_at`` until it is filed."""

    number: int
    start: dt.datetime
    end: dt.datetime
    suspends_at: dt.datetime
    filed_at: dt.datetime | None

    def describe(self) -> str:
        return (
            f"period {self.number} ({self.start.astimezone(CST):%Y-%m-%d} to "
            f"{self.end.astimezone(CST):%Y-%m-%d} CST)"
        )


@dataclass(frozen=True)
class UseReport:
    key_id: str
    period: ReportPeriod
    application_id: str
    resource_code: str
    text: str
    filed_by: str
    filed_at: dt.datetime


class OpenKeys:
    """The keys of this node's 授权开放 authorizations and their use reports. ``node`` is the
    node's identity (its authority revokes); ``key_secret`` the HMAC key keys are stored under."""

    def __init__(
        self,
        db: Database,
        notifications: Notifications,
        node: Identity,
        *,
        key_secret: bytes,
        use_report_days: int = 90,
        use_report_grace_days: int = 30,
        clock: Callable[[], dt.datetime] | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        if len(key_secret) < 32:
            raise ValueError("key_secret: at least 32 bytes")
        self._db = db
        self._notifications = notifications
        self._region = node.region
        self._td = node.trust_domain
        self._secret = key_secret
        self._every = dt.timedelta(days=use_report_days)
        self._grace = dt.timedelta(days=use_report_grace_days)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._recorder = Recorder(audit)

    def check_authority(self, by: Identity, action: str) -> None:
        if by.role is not Role.AUTHORITY or by.region != self._region:
            raise PermissionDenied(
                f"{by} may not {action}: only this node's data management authority "
                f"(数据管理机构 of {self._region}) authorizes 授权开放 data (第三十三条)"
            )

    def _hash(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    def new_key(self) -> tuple[str, str, str]:
        """(key id, the key in clear, its stored hash) of a new key."""
        key_id = secrets.token_hex(8)
        key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        return key_id, key, self._hash(key)

    async def _key_row(self, key: str) -> OpenKeyRow:
        """The row of a presented key; PermissionDenied "unknown" for anything else (a wrong
        secret with a real key id says no more than a made-up id)."""
        unknown = PermissionDenied(
            "the 授权开放 key is unknown: it was not issued by this node's authority (第三十三条)"
        )
        match = _KEY_RE.match(key)
        if match is None:
            raise unknown

        async def txn(session: AsyncSession) -> OpenKeyRow | None:
            return await session.get(OpenKeyRow, match.group(1))

        row = await self._db.read("opendata.key", txn)
        if row is None or not hmac.compare_digest(row.key_hash, self._hash(key)):
            raise unknown
        return row

    async def authorize(self, key: str, resource_code: str) -> KeyScope:
        """What ``key`` allows on ``resource_code``; PermissionDenied naming why not: unknown,
        revoked, expired, another resource, or suspended while a use report is overdue."""
        row = await self._key_row(key)
        now = self._clock()
        shown = f"key gok_{row.key_id}_…"
        if row.revoked:
            raise PermissionDenied(
                f"{shown} was revoked by the data management authority"
                f"{f': {row.revoke_reason}' if row.revoke_reason else ''}; 授权开放 data is "
                "read only under a standing authorization (第三十三条)"
            )
        if utc(row.not_after) <= now:
            raise PermissionDenied(
                f"{shown} expired at {utc(row.not_after).astimezone(CST):%Y-%m-%d %H:%M} CST: "
                "apply again for a new authorization (第三十三条)"
            )
        if row.resource_code != resource_code:
            raise PermissionDenied(
                f"{shown} authorizes resource {row.resource_code}, not {quote(resource_code)}: "
                "an authorization covers the resource its application names (第三十三条)"
            )
        overdue = await self._overdue(row, now)
        if overdue is not None:
            raise PermissionDenied(
                f"{shown} is suspended: the use report for {overdue.describe()} is overdue "
                "(第三十五条); it is valid again once the report is filed"
            )
        return scope_of(row)

    async def revoke(
        self, by: Identity, key_id: str, reason: str, *, request_id: str = ""
    ) -> OpenKey:
        """The authority revokes a key: every use is refused from now; the provider is told."""
        return await self._recorder.recorded(
            "opendata.revoke_key",
            by,
            key_id,
            "",
            self._revoke(by, key_id, reason, request_id),
            lambda k: (f"key {k.key_id} revoked", {"key_id": k.key_id}),
        )

    async def _revoke(self, by: Identity, key_id: str, reason: str, request_id: str) -> OpenKey:
        self.check_authority(by, f"revoke key {key_id}")
        reason = check_text(reason, "reason", required=True, rule="why the key is revoked")
        if request_id:
            check_request_id(request_id)
        now = self._clock()

        async def txn(session: AsyncSession) -> OpenKey:
            if done := await replay(self._db, session, by, request_id, "open_revoke", key_id):
                found = await session.get(OpenKeyRow, done)
                assert found is not None
                return key_of(found)
            rows = await session.exec(
                select(OpenKeyRow).where(OpenKeyRow.key_id == key_id).with_for_update()
            )
            row = rows.first()
            if row is None:
                raise NotFound(f"key {quote(key_id)} does not exist at this node")
            if row.revoked:
                raise FailedPrecondition(f"key {key_id} is already revoked")
            row.revoked = True
            row.revoked_at = now
            row.revoked_by = by.uri
            row.revoke_reason = reason
            session.add(row)
            remember(session, by, request_id, "open_revoke", key_id, key_id, now)
            Notifications.add(
                session,
                provider_identity(self._region, self._td, row.provider_code),
                NotificationKind.GRANT_REVOKED,
                f"授权开放：资源 {row.resource_code} 对 {row.entity_name}（{row.entity_code}）"
                f"的授权（申请号 {row.application_id}）已被数据管理机构撤销：{reason}",
                at=now,
                resource_code=row.resource_code,
                application_id=row.application_id,
            )
            return key_of(row)

        revoked = await self._db.write("opendata.revoke_key", txn)
        self._notifications.notify_changed()
        return revoked

    # --- use reports (第三十五条) ------------------------------------------------------------

    def _periods(self, row: OpenKeyRow, filed: dict[int, dt.datetime]) -> list[ReportPeriod]:
        issued, end = utc(row.issued_at), utc(row.not_after)
        periods: list[ReportPeriod] = []
        number = 1
        while True:
            start = issued + (number - 1) * self._every
            if start >= end:
                return periods
            stop = min(issued + number * self._every, end)
            periods.append(ReportPeriod(number, start, stop, stop + self._grace, filed.get(number)))
            number += 1

    async def _filed(self, key_id: str) -> dict[int, dt.datetime]:
        async def txn(session: AsyncSession) -> list[Any]:
            statement = select(OpenUseReportRow.period, OpenUseReportRow.filed_at).where(
                OpenUseReportRow.key_id == key_id
            )
            return list((await session.exec(statement)).all())

        return {int(p): utc(at) for p, at in await self._db.read("opendata.filed", txn)}

    async def _overdue(self, row: OpenKeyRow, now: dt.datetime) -> ReportPeriod | None:
        for period in self._periods(row, await self._filed(row.key_id)):
            if period.suspends_at > now:
                return None
            if period.filed_at is None:
                return period
        return None

    async def schedule(self, key_id: str) -> list[ReportPeriod]:
        """Every reporting period of a key, with when each report was filed."""

        async def txn(session: AsyncSession) -> OpenKeyRow | None:
            return await session.get(OpenKeyRow, key_id)

        row = await self._db.read("opendata.key_by_id", txn)
        if row is None:
            raise NotFound(f"key {quote(key_id)} does not exist at this node")
        return self._periods(row, await self._filed(key_id))

    async def file_report(
        self,
        submitter: Identity,
        text: str,
        *,
        key: str = "",
        application_id: str = "",
        period: int = 0,
        request_id: str = "",
    ) -> UseReport:
        """File the use report (第三十五条) of a key's holder for ``period`` (0: the earliest
        started period without one), authenticated by the key itself, or, for the authority
        recording a report it received otherwise, named by the application. A suspended,
        expired or revoked key may still report: the obligation outlives the use."""
        return await self._recorder.recorded(
            "opendata.use_report",
            submitter,
            application_id or "key",
            "",
            self._file_report(submitter, text, key, application_id, period, request_id),
            lambda r: (
                f"use report for {r.period.describe()} of key {r.key_id}",
                {"key_id": r.key_id, "period": r.period.number},
            ),
        )

    async def _file_report(
        self,
        submitter: Identity,
        text: str,
        key: str,
        application_id: str,
        period: int,
        request_id: str,
    ) -> UseReport:
        text = check_text(
            text,
            "text",
            required=True,
            rule="the development and use of the data in the period (第三十五条)",
            limit=MAX_REPORT,
        )
        if request_id:
            check_request_id(request_id)
        if key:
            row = await self._key_row(key)
        elif application_id:
            self.check_authority(submitter, f"file a use report for {application_id}")
            row = await self._key_row_of_application(application_id)
        else:
            raise InvalidArgument("key: required (the key the report is about)")
        periods = self._periods(row, {})
        now = self._clock()
        if period < 0 or period > len(periods):
            raise InvalidArgument(
                f"period: {period} is not a reporting period of key {row.key_id} (1 to "
                f"{len(periods)}, or 0 for the earliest without a report)"
            )

        async def txn(session: AsyncSession) -> UseReport:
            done = await replay(self._db, session, submitter, request_id, "use_report", row.key_id)
            # Two reports for one key race to the same period: one waits for the other.
            await self._db.lock(session, f"use_report:{row.key_id}")
            filed = {
                int(p): utc(at)
                for p, at in (
                    await session.exec(
                        select(OpenUseReportRow.period, OpenUseReportRow.filed_at).where(
                            OpenUseReportRow.key_id == row.key_id
                        )
                    )
                ).all()
            }
            if done:
                stored = await session.get(OpenUseReportRow, (row.key_id, int(done)))
                assert stored is not None
                return self._report_of(stored, self._periods(row, filed))
            schedule = self._periods(row, filed)
            number = period or next(
                (p.number for p in schedule if p.filed_at is None and p.start <= now), 0
            )
            if number == 0:
                upcoming = next((p for p in schedule if p.filed_at is None), None)
                raise FailedPrecondition(
                    f"no reporting period of key {row.key_id} is open without a report"
                    + (f": the next, {upcoming.describe()}, has not begun" if upcoming else "")
                )
            chosen = schedule[number - 1]
            if chosen.start > now:
                raise FailedPrecondition(f"{chosen.describe()} has not begun: report on it later")
            if chosen.filed_at is not None:
                raise FailedPrecondition(
                    f"the use report for {chosen.describe()} was filed already "
                    f"({chosen.filed_at.astimezone(CST):%Y-%m-%d %H:%M} CST)"
                )
            stored = OpenUseReportRow(
                key_id=row.key_id,
                period=number,
                application_id=row.application_id,
                resource_code=row.resource_code,
                text=text,
                filed_by=submitter.uri,
                filed_at=now,
            )
            session.add(stored)
            remember(session, submitter, request_id, "use_report", row.key_id, str(number), now)
            return self._report_of(stored, schedule)

        return await self._db.write("opendata.use_report", txn)

    async def _key_row_of_application(self, application_id: str) -> OpenKeyRow:
        async def txn(session: AsyncSession) -> OpenKeyRow | None:
            statement = select(OpenKeyRow).where(OpenKeyRow.application_id == application_id)
            return (await session.exec(statement)).first()

        row = await self._db.read("opendata.key_of_application", txn)
        if row is None:
            raise NotFound(f"open application {quote(application_id)} issued no key here")
        return row

    def _report_of(self, row: OpenUseReportRow, schedule: Sequence[ReportPeriod]) -> UseReport:
        period = schedule[row.period - 1]
        return UseReport(
            key_id=row.key_id,
            period=dataclasses.replace(period, filed_at=utc(row.filed_at)),
            application_id=row.application_id,
            resource_code=row.resource_code,
            text=row.text,
            filed_by=row.filed_by,
            filed_at=utc(row.filed_at),
        )

    async def reports(
        self,
        *,
        key_id: str = "",
        resource_code: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[UseReport], str]:
        """Use reports, newest first (for the authority)."""
        offset, size = paging.offset_page(
            page_token, page_size, default=DEFAULT_PAGE, maximum=MAX_PAGE
        )
        t = OpenUseReportRow
        query = select(t, OpenKeyRow).join(OpenKeyRow, col(OpenKeyRow.key_id) == col(t.key_id))
        if key_id:
            query = query.where(t.key_id == key_id)
        if resource_code:
            query = query.where(t.resource_code == resource_code)
        query = query.order_by(col(t.filed_at).desc(), col(t.key_id), col(t.period).desc())

        async def txn(session: AsyncSession) -> list[Any]:
            return list((await session.exec(query.offset(offset).limit(size + 1))).all())

        rows = await self._db.read("opendata.reports", txn)
        page, token = paging.offset_rows(rows, offset, size)
        return [self._report_of(r, self._periods(k, {})) for r, k in page], token
