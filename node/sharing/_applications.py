"""Applications for 有条件共享 resources and the grants they make, as stored by the node that
owns the resource (第二十五条).

Every write is one transaction with the notifications it makes (node.sharing._notifications): the
authority and the provider learn of an application, the applicant and the provider of its
review, the grantee and the provider of a revocation. Writes that carry a ``request_id`` are
idempotent per caller (node.idempotency). Ids carry
the owner's region (``350100-A-<hex>``, ``350100-G-<hex>``), so any node can route a call
naming one to the node that holds it.

The rules on values are checked here and named in each refusal; who may review is
node.sharing._grants's. Used by the gRPC servicer and by ``govnode access`` alike. No grpc.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Identity, Role, authority_identity, provider_identity
from gateway.quote import quote_each
from node import paging
from node.catalog import (
    ResourceEntry,
    ResourceStatus,
    ShareType,
    check_tester_use,
)
from node.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from node.idempotency import check_request_id, remember, replay
from node.models import AccessApplicationRow, AccessGrantRow
from node.sharing._grants import (
    METHOD_NAMES,
    Application,
    ApplicationStatus,
    Decision,
    Draft,
    Grant,
    Review,
    application_from_row,
    check_reviewer,
    grant_from_row,
    is_provider,
    may_see,
)
from node.sharing._notifications import NotificationKind, Notifications
from node.storage import Database

DEFAULT_PAGE = 50
MAX_PAGE = 200
MAX_TEXT = 2000

_STATUS_ZH = {ApplicationStatus.APPROVED: "审定同意", ApplicationStatus.REJECTED: "审定不同意"}


def region_of_id(object_id: str) -> str:
    """The region an application or grant id names (its owner node), or "" if none."""
    region, sep, _ = object_id.partition("-")
    return region if sep and len(region) == 6 and region.isdigit() else ""


def _new_id(region: str, kind: str) -> str:
    return f"{region}-{kind}-{os.urandom(8).hex()}"


def _text(value: str, field: str, *, required: bool, rule: str) -> str:
    value = value.strip()
    if required and not value:
        raise InvalidArgument(f"{field}: required ({rule})")
    if len(value) > MAX_TEXT:
        raise InvalidArgument(f"{field}: at most {MAX_TEXT} characters, got {len(value)}")
    return value


def _methods(methods: Sequence[Any]) -> str:
    return ", ".join(METHOD_NAMES[m] for m in methods)


class Applications:
    """Applications and grants held by this node. ``node`` is the node's own identity: its
    region is where applications are held and whose authority reviews them."""

    def __init__(
        self,
        db: Database,
        notifications: Notifications,
        node: Identity,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._db = db
        self._notifications = notifications
        self._region = node.region
        self._td = node.trust_domain
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    @property
    def region(self) -> str:
        return self._region

    # --- applications ----------------------------------------------------------------------

    def _check_draft(self, caller: Identity, entry: ResourceEntry, draft: Draft) -> None:
        code = entry.resource_code
        if caller.role is not Role.AGENCY and caller.role is not Role.TESTER:
            raise PermissionDenied(
                f"{caller} may not apply for resource {code}: applications for 有条件共享 are "
                "made by agencies (第二十五条: 数据生产应用单位…向数据管理机构提出申请)"
            )
        check_tester_use(caller, entry)
        if entry.probe and caller.role is not Role.TESTER:
            raise PermissionDenied(
                f"{caller} may not apply for resource {code}: it is a conformance probe, and "
                "applications for probes are made by conformance testers only (第三十一条)"
            )
        if entry.region != self._region:
            raise FailedPrecondition(
                f"resource {code} is held by the node of region {entry.region}; apply there "
                f"(this node is {self._region})"
            )
        if entry.status is ResourceStatus.WITHDRAWN:
            raise FailedPrecondition(f"resource {code} ({entry.name}) is withdrawn")
        if is_provider(caller, entry):
            raise FailedPrecondition(
                f"resource {code} ({entry.name}) is the caller's own: its provider uses it "
                "without an application"
            )
        if entry.share_type is ShareType.NOT_SHARED:
            raise PermissionDenied(
                f"resource {code} ({entry.name}) is 暂不共享 (not shared) under "
                f"{entry.legal_basis or 'its legal basis'}: it cannot be applied for; only its "
                "provider uses it (第二十四条)"
            )
        if entry.share_type is ShareType.UNCONDITIONAL:
            raise FailedPrecondition(
                f"resource {code} ({entry.name}) is 无条件共享: it needs no application; any "
                "agency may use it directly (第二十五条)"
            )
        declared = [i.name for i in entry.items]
        if not draft.items:
            raise InvalidArgument(f"items: name the items of resource {code} you need")
        if len(draft.items) > len(declared):
            # Before any name is looked up or listed: a request can carry many thousands.
            raise InvalidArgument(
                f"items: {len(draft.items)} names; resource {code} has {len(declared)} items"
            )
        known = set(declared)
        unknown = [i for i in draft.items if i not in known]
        if unknown:
            raise InvalidArgument(
                f"items: {quote_each(unknown)} not an item of resource {code}; its items are "
                f"{', '.join(declared)}"
            )
        if not draft.share_methods:
            raise InvalidArgument("share_methods: name the share methods you need")
        offered = [m for m in draft.share_methods if m not in entry.share_methods]
        if offered:
            raise InvalidArgument(
                f"share_methods: resource {code} is not shared by {_methods(offered)}; its share "
                f"methods are: {_methods(entry.share_methods) or 'none'}"
            )
        _text(draft.purpose, "purpose", required=True, rule="what the data will be used for")
        _text(
            draft.legal_basis,
            "legal_basis",
            required=True,
            rule="the duty and legal basis the use rests on, 根据履职需要 (第二十五条)",
        )
        now = self._clock()
        if draft.not_after is None:
            raise InvalidArgument("not_after: required (the end of the period of use)")
        start = draft.not_before or now
        if draft.not_after <= max(start, now):
            raise InvalidArgument(
                "not_after: must be after not_before and after now "
                f"(got {draft.not_after.isoformat()})"
            )

    async def apply(self, caller: Identity, entry: ResourceEntry, draft: Draft) -> Application:
        """An agency applies to use ``entry`` (第二十五条); the provider and this node's
        authority are notified in the same transaction."""
        if draft.request_id:
            check_request_id(draft.request_id)
        self._check_draft(caller, entry, draft)
        not_after = draft.not_after
        assert not_after is not None  # _check_draft requires it
        now = self._clock()

        async def txn(session: AsyncSession) -> Application:
            done = await replay(
                self._db, session, caller, draft.request_id, "apply", entry.resource_code
            )
            if done:
                return await self._application(session, done)
            row = AccessApplicationRow(
                id=_new_id(self._region, "A"),
                status=ApplicationStatus.PENDING.value,
                applicant=caller.uri,
                resource_code=entry.resource_code,
                provider_code=entry.provider_code,
                region=self._region,
                probe=entry.probe,
                items=json.dumps(list(dict.fromkeys(draft.items)), ensure_ascii=False),
                share_methods=json.dumps([m.value for m in dict.fromkeys(draft.share_methods)]),
                purpose=draft.purpose.strip(),
                legal_basis=draft.legal_basis.strip(),
                not_before=draft.not_before,
                not_after=not_after,
                request_id=draft.request_id,
                created_at=now,
            )
            session.add(row)
            remember(session, caller, draft.request_id, "apply", entry.resource_code, row.id, now)
            message = (
                f"{caller} 申请使用有条件共享资源 {entry.resource_code}（{entry.name}）："
                f"数据项 {', '.join(json.loads(row.items))}，方式 "
                f"{_methods(draft.share_methods)}，用途：{row.purpose}；申请号 {row.id}，"
                "待数据管理机构审定（第二十五条）"
            )
            for recipient in self._parties(entry.provider_code, entry.region):
                Notifications.add(
                    session,
                    recipient,
                    NotificationKind.APPLICATION_RECEIVED,
                    message,
                    at=now,
                    resource_code=entry.resource_code,
                    application_id=row.id,
                )
            return application_from_row(row)

        application = await self._db.write("access.apply", txn)
        self._notifications.notify_changed()
        return application

    def _parties(self, provider_code: str, region: str) -> list[str]:
        return [
            provider_identity(region, self._td, provider_code),
            authority_identity(self._region, self._td),
        ]

    async def _application(self, session: AsyncSession, application_id: str) -> Application:
        row = await session.get(AccessApplicationRow, application_id)
        if row is None:
            raise NotFound(f"application {application_id} does not exist at this node")
        return application_from_row(row)

    def _check_visible(self, caller: Identity, app: Application) -> None:
        if not may_see(
            caller,
            self._region,
            party=app.applicant,
            provider_code=app.provider_code,
            region=app.region,
            probe=app.probe,
        ):
            raise PermissionDenied(
                f"{caller} may not see application {app.id}: it is visible to its applicant, "
                "the resource's provider and the data management authority only"
            )

    async def get_application(self, caller: Identity, application_id: str) -> Application:
        app = await self._db.read(
            "access.get_application", lambda s: self._application(s, application_id)
        )
        self._check_visible(caller, app)
        return app

    def _visibility(self, caller: Identity, party: Any, provider: Any, probe: Any) -> Any:
        if caller.role is Role.AUTHORITY and caller.region == self._region:
            return sa.true()
        seen = [party == caller.uri]
        if caller.role is Role.AGENCY:
            seen.append(sa.and_(provider == caller.subject, probe.is_(False)))
        if caller.role is Role.TESTER:
            seen.append(probe.is_(True))
        return sa.or_(*seen)

    async def list_applications(
        self,
        caller: Identity,
        *,
        status: ApplicationStatus | None = None,
        resource_code: str = "",
        applicant: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[Application], str]:
        """The applications ``caller`` may see, newest first, with the next page's token."""
        offset, size = paging.offset_page(
            page_token, page_size, default=DEFAULT_PAGE, maximum=MAX_PAGE
        )
        t = AccessApplicationRow
        query = select(t).where(
            self._visibility(caller, col(t.applicant), col(t.provider_code), col(t.probe))
        )
        if status is not None:
            query = query.where(t.status == status.value)
        if resource_code:
            query = query.where(t.resource_code == resource_code)
        if applicant:
            query = query.where(t.applicant == applicant)
        query = query.order_by(col(t.created_at).desc(), col(t.id).desc())

        async def txn(session: AsyncSession) -> list[AccessApplicationRow]:
            return list((await session.exec(query.offset(offset).limit(size + 1))).all())

        rows = await self._db.read("access.list_applications", txn)
        page, token = paging.offset_rows(rows, offset, size)
        return [application_from_row(r) for r in page], token

    async def withdraw(
        self, caller: Identity, application_id: str, request_id: str = ""
    ) -> Application:
        """The applicant withdraws its own pending application."""
        now = self._clock()

        async def txn(session: AsyncSession) -> Application:
            done = await replay(
                self._db, session, caller, request_id, "withdraw_application", application_id
            )
            if done:
                return await self._application(session, done)
            row = await self._locked(session, AccessApplicationRow, application_id, "application")
            app = application_from_row(row)
            if row.applicant != caller.uri:
                self._check_visible(caller, app)
                raise PermissionDenied(
                    f"{caller} may not withdraw application {application_id}: only its "
                    f"applicant ({row.applicant}) may"
                )
            if row.status != ApplicationStatus.PENDING.value:
                raise FailedPrecondition(
                    f"application {application_id} is {row.status}: only a pending application "
                    "may be withdrawn"
                )
            row.status = ApplicationStatus.WITHDRAWN.value
            row.decided_at = now
            session.add(row)
            remember(session, caller, request_id, "withdraw_application", row.id, row.id, now)
            return application_from_row(row)

        return await self._db.write("access.withdraw", txn)

    @staticmethod
    async def _locked(session: AsyncSession, table: Any, object_id: str, what: str) -> Any:
        rows = await session.exec(select(table).where(table.id == object_id).with_for_update())
        row = rows.first()
        if row is None:
            raise NotFound(f"{what} {object_id} does not exist at this node")
        return row

    # --- review ----------------------------------------------------------------------------

    def _grant_scope(
        self, app: Application, review: Review, now: dt.datetime
    ) -> tuple[list[str], list[str], list[Any], dt.datetime, dt.datetime]:
        """The approved scope: a narrowing of what was applied for, never a widening."""
        if len(review.items) > len(app.items):
            raise InvalidArgument(
                f"items: {len(review.items)} names; {len(app.items)} items were applied for"
            )
        items = list(dict.fromkeys(review.items)) or list(app.items)
        applied = set(app.items)
        extra = [i for i in items if i not in applied]
        if extra:
            raise InvalidArgument(
                f"items: {quote_each(extra)} not applied for; an approval may only narrow the "
                f"items applied for ({', '.join(app.items)})"
            )
        methods = list(dict.fromkeys(review.share_methods)) or list(app.share_methods)
        wider = [m for m in methods if m not in app.share_methods]
        if wider:
            raise InvalidArgument(
                f"share_methods: {_methods(wider)} not applied for; an approval may only narrow "
                f"the methods applied for ({_methods(app.share_methods)})"
            )
        applied_start = app.not_before or now
        start = review.not_before or applied_start
        if review.not_before is not None and review.not_before < applied_start:
            raise InvalidArgument(
                f"not_before: {review.not_before.isoformat()} is before the start applied for "
                f"({applied_start.isoformat()}); an approval may only narrow the period"
            )
        end = review.not_after or app.not_after
        if end > app.not_after:
            raise InvalidArgument(
                f"not_after: {end.isoformat()} is later than the end applied for "
                f"({app.not_after.isoformat()}); an approval may only narrow the period"
            )
        if end <= max(start, now):
            raise InvalidArgument("not_after: the grant would end before it starts or in the past")
        if len(review.clear_text_items) > len(items):
            raise InvalidArgument(
                f"clear_text_items: {len(review.clear_text_items)} names; {len(items)} items "
                "are granted"
            )
        clear = list(dict.fromkeys(review.clear_text_items))
        granted = set(items)
        outside = [i for i in clear if i not in granted]
        if outside:
            raise InvalidArgument(
                f"clear_text_items: {quote_each(outside)} not among the granted items "
                f"({', '.join(items)})"
            )
        if clear and not review.justification.strip():
            raise InvalidArgument(
                "justification: required when clear_text_items is set: why the grantee needs "
                f"{', '.join(clear)} in clear text (分级分类管理, 第三十七条)"
            )
        return items, clear, methods, start, end

    async def review(
        self, caller: Identity, application_id: str, review: Review
    ) -> tuple[Application, Grant | None]:
        """The authority's review (审定, 第二十五条). Approval makes the grant in the same
        transaction; the applicant and the provider are notified either way."""
        if review.decision is Decision.REJECT:
            _text(review.comment, "comment", required=True, rule="the reason for a rejection")
        _text(review.justification, "justification", required=False, rule="")
        now = self._clock()

        async def txn(session: AsyncSession) -> tuple[Application, Grant | None]:
            done = await replay(
                self._db, session, caller, review.request_id, "review_application", application_id
            )
            if done:
                app = await self._application(session, done)
                grant = await session.get(AccessGrantRow, app.grant_id) if app.grant_id else None
                return app, grant_from_row(grant) if grant else None
            row = await self._locked(session, AccessApplicationRow, application_id, "application")
            check_reviewer(
                caller, self._region, probe=row.probe, action=f"review application {row.id}"
            )
            app = application_from_row(row)
            if app.status is not ApplicationStatus.PENDING:
                raise FailedPrecondition(
                    f"application {app.id} is already {app.status.value}: only a pending "
                    "application is reviewed"
                )
            grant_row = None
            if review.decision is Decision.APPROVE:
                items, clear, methods, start, end = self._grant_scope(app, review, now)
                grant_row = AccessGrantRow(
                    id=_new_id(self._region, "G"),
                    application_id=app.id,
                    grantee=app.applicant,
                    resource_code=app.resource_code,
                    provider_code=app.provider_code,
                    region=app.region,
                    probe=app.probe,
                    items=json.dumps(items, ensure_ascii=False),
                    clear_text_items=json.dumps(clear, ensure_ascii=False),
                    share_methods=json.dumps([m.value for m in methods]),
                    purpose=app.purpose,
                    not_before=start,
                    not_after=end,
                    justification=review.justification.strip(),
                    granted_by=caller.uri,
                    created_at=now,
                )
                session.add(grant_row)
                row.status = ApplicationStatus.APPROVED.value
                row.grant_id = grant_row.id
            else:
                row.status = ApplicationStatus.REJECTED.value
            row.reviewer = caller.uri
            row.decided_at = now
            row.review_comment = review.comment.strip()
            session.add(row)
            # The grant row must exist before the application names it (foreign key order).
            await session.flush()
            remember(session, caller, review.request_id, "review_application", row.id, row.id, now)
            status = ApplicationStatus(row.status)
            message = f"申请 {row.id}（资源 {row.resource_code}）{_STATUS_ZH[status]}"
            if grant_row is not None:
                message += (
                    f"：授权 {grant_row.id}，数据项 {', '.join(json.loads(grant_row.items))}，"
                    f"方式 {_methods([m for m in json.loads(grant_row.share_methods)])}，"
                    f"有效期至 {grant_row.not_after.isoformat()}"
                )
            if row.review_comment:
                message += f"；意见：{row.review_comment}"
            message += "（第二十五条）"
            for recipient in (
                app.applicant,
                provider_identity(app.region, self._td, app.provider_code),
            ):
                Notifications.add(
                    session,
                    recipient,
                    NotificationKind.APPLICATION_REVIEWED,
                    message,
                    at=now,
                    resource_code=row.resource_code,
                    application_id=row.id,
                    grant_id=row.grant_id,
                )
            return application_from_row(row), grant_from_row(grant_row) if grant_row else None

        outcome = await self._db.write("access.review", txn)
        self._notifications.notify_changed()
        return outcome

    # --- grants ----------------------------------------------------------------------------

    def _check_grant_visible(self, caller: Identity, grant: Grant) -> None:
        if not may_see(
            caller,
            self._region,
            party=grant.grantee,
            provider_code=grant.provider_code,
            region=grant.region,
            probe=grant.probe,
        ):
            raise PermissionDenied(
                f"{caller} may not see grant {grant.id}: it is visible to its grantee, the "
                "resource's provider and the data management authority only"
            )

    async def get_grant(self, caller: Identity, grant_id: str) -> Grant:
        async def txn(session: AsyncSession) -> Grant:
            row = await session.get(AccessGrantRow, grant_id)
            if row is None:
                raise NotFound(f"grant {grant_id} does not exist at this node")
            return grant_from_row(row)

        grant = await self._db.read("access.get_grant", txn)
        self._check_grant_visible(caller, grant)
        return grant

    async def list_grants(
        self,
        caller: Identity,
        *,
        grantee: str = "",
        resource_code: str = "",
        include_inactive: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[Grant], str]:
        """The grants ``caller`` may see, newest first; by default only those in force or not
        yet started."""
        offset, size = paging.offset_page(
            page_token, page_size, default=DEFAULT_PAGE, maximum=MAX_PAGE
        )
        t = AccessGrantRow
        query = select(t).where(
            self._visibility(caller, col(t.grantee), col(t.provider_code), col(t.probe))
        )
        if grantee:
            query = query.where(t.grantee == grantee)
        if resource_code:
            query = query.where(t.resource_code == resource_code)
        if not include_inactive:
            query = query.where(col(t.revoked).is_(False), col(t.not_after) >= self._clock())
        query = query.order_by(col(t.created_at).desc(), col(t.id).desc())

        async def txn(session: AsyncSession) -> list[AccessGrantRow]:
            return list((await session.exec(query.offset(offset).limit(size + 1))).all())

        rows = await self._db.read("access.list_grants", txn)
        page, token = paging.offset_rows(rows, offset, size)
        return [grant_from_row(r) for r in page], token

    async def revoke(
        self, caller: Identity, grant_id: str, reason: str, request_id: str = ""
    ) -> Grant:
        """The authority revokes a grant: every use stops from the next call; the grantee and
        the provider are notified."""
        reason = _text(reason, "reason", required=True, rule="why the grant is revoked")
        now = self._clock()

        async def txn(session: AsyncSession) -> Grant:
            if done := await replay(
                self._db, session, caller, request_id, "revoke_grant", grant_id
            ):
                row = await session.get(AccessGrantRow, done)
                assert row is not None
                return grant_from_row(row)
            row = await self._locked(session, AccessGrantRow, grant_id, "grant")
            check_reviewer(caller, self._region, probe=row.probe, action=f"revoke grant {row.id}")
            if row.revoked:
                raise FailedPrecondition(f"grant {grant_id} is already revoked")
            row.revoked = True
            row.revoked_at = now
            row.revoke_reason = reason
            row.revoked_by = caller.uri
            session.add(row)
            remember(session, caller, request_id, "revoke_grant", row.id, row.id, now)
            message = (
                f"授权 {row.id}（资源 {row.resource_code}）已被数据管理机构撤销：{reason}；"
                "此后的使用均被拒绝（第三十七条）"
            )
            for recipient in (
                row.grantee,
                provider_identity(row.region, self._td, row.provider_code),
            ):
                Notifications.add(
                    session,
                    recipient,
                    NotificationKind.GRANT_REVOKED,
                    message,
                    at=now,
                    resource_code=row.resource_code,
                    application_id=row.application_id,
                    grant_id=row.id,
                )
            return grant_from_row(row)

        grant = await self._db.write("access.revoke", txn)
        self._notifications.notify_changed()
        return grant
